//! Live delivery: one long-lived task per peer. It runs a round, then waits for a reason to
//! run the next: for a pull edge, a waiting `GET /sync/changes` on the peer from this node's
//! checkpoint answers with something; for a push edge, this node commits. On error it backs
//! off with jitter and resumes from the checkpoints, which the rounds keep as always.

use std::collections::BTreeMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::SyncManager;
use crate::config::PeerConfig;
use crate::hlc::Hlc;
use crate::model::NodeId;
use crate::sync::client::{RawPage, WaitFor};
use crate::sync::embedding::{embedding_mismatches, local_collections};
use crate::wire::{ChangeFilter, PeerRoundStats, WatermarkResponse};

/// How long a waiting pull asks the peer to hold it (under the client's request timeout).
pub const LIVE_WAIT: Duration = Duration::from_secs(25);

/// After a local commit wakes a push, how long it waits for more to send in the same page.
const PUSH_COALESCE: Duration = Duration::from_millis(2);

/// First and largest pause after a failed round or wait.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A running live task and the peer configuration it was started for.
pub(super) struct LiveTask {
    config: PeerConfig,
    handle: JoinHandle<()>,
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The peers this node receives everything from live: pull edges with no collection scope
/// whose last round and wait succeeded. A waiting pull on any other peer names them `quiet`,
/// so that peer's relaying of their writes (which arrive here directly) does not wake it:
/// in a full mesh of N nodes a write then costs N-1 deliveries, not (N-1)².
pub(super) struct Sources {
    healthy: Mutex<BTreeMap<String, NodeId>>,
    /// Bumped when a source is lost, so waits that counted on it ask again without it.
    lost: watch::Sender<u64>,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            healthy: Mutex::new(BTreeMap::new()),
            lost: watch::channel(0).0,
        }
    }
}

impl Sources {
    /// Records whether `peer` (node `node`) is a source now.
    fn set(&self, peer: &str, node: Option<NodeId>) {
        let mut healthy = self.healthy.lock().unwrap_or_else(|e| e.into_inner());
        let lost = match node {
            Some(n) => healthy
                .insert(peer.to_string(), n)
                .is_some_and(|old| old != n),
            None => healthy.remove(peer).is_some(),
        };
        if lost {
            self.lost.send_modify(|n| *n += 1);
        }
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut healthy = self.healthy.lock().unwrap_or_else(|e| e.into_inner());
        let before = healthy.len();
        healthy.retain(|peer, _| keep(peer));
        if healthy.len() != before {
            self.lost.send_modify(|n| *n += 1);
        }
    }

    /// The writers a wait on `peer` need not be woken for: every source but `peer`.
    fn quiet_for(&self, peer: &str) -> Vec<NodeId> {
        let healthy = self.healthy.lock().unwrap_or_else(|e| e.into_inner());
        let own = healthy.get(peer).copied();
        let mut quiet: Vec<NodeId> = healthy
            .iter()
            .filter(|(p, n)| p.as_str() != peer && Some(**n) != own)
            .map(|(_, n)| *n)
            .collect();
        quiet.sort_unstable_by_key(|n| n.0);
        quiet.dedup();
        quiet
    }
}

/// A waiting pull's answer and what it asked for.
struct Waited {
    since: Hlc,
    filter: ChangeFilter,
    raw: RawPage,
}

/// What ends a live task's wait.
enum Wake {
    /// A waiting pull answered.
    Remote(Box<Waited>),
    /// This node committed (for a push edge).
    Local,
    Failed,
}

fn backoff(failures: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1 << failures.min(6))
        .min(BACKOFF_MAX);
    // Up to half again, so that peers that failed together do not retry together.
    base + base.mul_f64(rand::random::<f64>() / 2.0)
}

impl SyncManager {
    /// Starts live tasks for the configured peers, and from now on keeps them in step with
    /// the configuration.
    pub(super) fn start_live(&self) {
        self.live_on
            .store(true, std::sync::atomic::Ordering::Release);
        self.reconcile_live();
    }

    /// Stops every live task.
    pub(super) fn stop_live(&self) {
        self.live_on
            .store(false, std::sync::atomic::Ordering::Release);
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.live_sources.retain(|_| false);
    }

    /// This peer's node id if this node receives everything the peer has from it: a pull
    /// edge with no collection scope and nothing blocked, whose round just succeeded.
    fn full_source(&self, peer_id: &str) -> Option<NodeId> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let rt = peers.get(peer_id)?;
        let unscoped = rt.config.direction.pulls()
            && rt.config.collections.is_empty()
            && rt.config.exclude_collections.is_empty()
            && rt.status.blocked_collections.is_empty();
        rt.status.node_id.filter(|_| unscoped)
    }

    /// One task per configured peer, restarted when its configuration changed.
    pub(super) fn reconcile_live(&self) {
        if !self.live_on.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let configs: Vec<PeerConfig> = if self.config().live {
            self.peers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|rt| rt.config.clone())
                .collect()
        } else {
            Vec::new()
        };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|id, t| configs.iter().any(|c| &c.peer_id == id && *c == t.config));
        self.live_sources.retain(|peer| live.contains_key(peer));
        for config in configs {
            if live.contains_key(&config.peer_id) {
                continue;
            }
            let me = self.me.clone();
            let peer_id = config.peer_id.clone();
            let handle = tokio::spawn(run(me, peer_id.clone()));
            live.insert(peer_id, LiveTask { config, handle });
        }
    }

    /// Where a waiting pull from this peer starts, and what it asks for: the same scope and
    /// echo suppression as the last round's pull.
    fn live_pull_from(&self, peer_id: &str) -> Option<(Hlc, ChangeFilter)> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let rt = peers.get(peer_id)?;
        let since = rt.status.checkpoint.unwrap_or(Hlc::ZERO);
        let scope = super::scope_filter(
            &rt.config.collections,
            &rt.config.exclude_collections,
            &rt.status.blocked_collections,
        );
        Some((
            since,
            super::without_echo(scope, since, self.store.node_id()),
        ))
    }

    /// The peer as its last round saw it: its watermark answer and its collections.
    fn last_round_of(
        &self,
        peer_id: &str,
    ) -> Option<(WatermarkResponse, Vec<crate::wire::CollectionSummary>)> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let rt = peers.get(peer_id)?;
        let wm = WatermarkResponse {
            hlc: rt.status.peer_watermark.unwrap_or(Hlc::ZERO),
            node_id: rt.status.node_id?,
            incarnation: rt.status.incarnation.clone()?,
        };
        Some((wm, rt.remote_collections.clone()?))
    }

    /// Applies what a waiting pull brought without the round's watermark and collections
    /// requests: the wait named the incarnation the checkpoint belongs to, and the embedding
    /// check runs against the collections the last round saw (a page that changes them
    /// takes a round). Returns whether a round is due (something is left, or a check failed).
    async fn apply_waited(
        &self,
        peer_id: &str,
        since: Hlc,
        filter: ChangeFilter,
        raw: RawPage,
    ) -> bool {
        let (Some((cfg, client)), Some((wm, remote))) =
            (self.peer_snapshot(peer_id), self.last_round_of(peer_id))
        else {
            return true;
        };
        match local_collections(&*self.store).await {
            Ok(local) if embedding_mismatches(&local, &remote).is_empty() => {}
            _ => return true,
        }
        let lock = self.round_lock(peer_id);
        let _guard = lock.lock().await;
        let config = self.config();
        let round = super::Round {
            cfg: &cfg,
            client: &client,
            wm: &wm,
            // Nothing is blocked: the check above found no mismatch.
            filter: super::scope_filter(&cfg.collections, &cfg.exclude_collections, &[]),
            strategy: config.conflict_strategy,
            batch: config.batch_size,
            full: false,
        };
        let started = std::time::Instant::now();
        let mut stats = PeerRoundStats {
            peer_id: peer_id.to_string(),
            ..Default::default()
        };
        match self
            .pull_waited(&round, since, &filter, raw, &mut stats)
            .await
        {
            Ok(None) => true,
            Ok(Some(more)) => {
                if stats.pulled > 0 || stats.conflicts > 0 {
                    self.record_round(&mut stats, started, Ok(()), false);
                }
                more
            }
            Err(e) => {
                self.record_round(&mut stats, started, Err(e), false);
                true
            }
        }
    }

    /// Waits until this peer has something for this node, or this node has something for
    /// this peer, or a wait fails.
    async fn next_wake(
        &self,
        peer_id: &str,
        commits: &mut tokio::sync::watch::Receiver<crate::store::Commit>,
    ) -> Wake {
        let Some((config, client)) = self.peer_snapshot(peer_id) else {
            return Wake::Failed;
        };
        let remote = async {
            if !config.direction.pulls() {
                return std::future::pending::<Wake>().await;
            }
            let mut lost = self.live_sources.lost.subscribe();
            loop {
                let Some((since, filter)) = self.live_pull_from(peer_id) else {
                    return Wake::Failed;
                };
                let incarnation = self.last_round_of(peer_id).map(|(wm, _)| wm.incarnation);
                lost.borrow_and_update();
                // From zero the pull names no puller (see `without_echo`), so the peer cannot
                // report where it stands; it takes the first commit the peer makes instead,
                // and names itself from then on.
                let quiet = if since > Hlc::ZERO {
                    self.live_sources.quiet_for(peer_id)
                } else {
                    Vec::new()
                };
                let counts_on_sources = !quiet.is_empty();
                tracing::trace!(peer = peer_id, %since, ?quiet, "live wait sent");
                let wait = WaitFor {
                    since,
                    limit: self.config().batch_size,
                    filter: &filter,
                    wait: LIVE_WAIT,
                    quiet,
                    incarnation,
                };
                let answer = tokio::select! {
                    a = client.wait_changes(wait) => a,
                    // A source this wait counted on is gone: ask again without it, so its
                    // writes come through this peer meanwhile.
                    Ok(()) = lost.changed(), if counts_on_sources => continue,
                };
                match answer {
                    Ok(raw) => {
                        tracing::trace!(peer = peer_id, %since, "live wait answered");
                        return Wake::Remote(Box::new(Waited { since, filter, raw }));
                    }
                    Err(e) => {
                        tracing::debug!(peer = peer_id, error = %e, "live wait failed");
                        self.live_sources.set(peer_id, None);
                        return Wake::Failed;
                    }
                }
            }
        };
        let local = async {
            if !config.direction.pushes() {
                return std::future::pending::<Wake>().await;
            }
            if commits.changed().await.is_err() {
                return std::future::pending::<Wake>().await;
            }
            tokio::time::sleep(PUSH_COALESCE).await;
            Wake::Local
        };
        tokio::select! {
            w = remote => w,
            w = local => w,
        }
    }
}

async fn run(me: Weak<SyncManager>, peer_id: String) {
    // Counted apart: a peer whose rounds succeed but whose waits fail (one too old to wait)
    // is backed off to a slow retry, not polled.
    let mut round_failures = 0u32;
    let mut wait_failures = 0u32;
    let Some(mut commits) = me.upgrade().map(|m| m.store.commits()) else {
        return;
    };
    let mut round_due = true;
    loop {
        let Some(m) = me.upgrade() else {
            return;
        };
        if round_due {
            commits.borrow_and_update();
            let stats = m.sync_round(&peer_id, false).await;
            // A collection stopped for its embedding settings stays stopped until they
            // agree; the others are delivered live meanwhile.
            let failed =
                stats.error.is_some() && stats.error_code.as_deref() != Some("embedding_mismatch");
            m.live_sources.set(
                &peer_id,
                if failed {
                    None
                } else {
                    m.full_source(&peer_id)
                },
            );
            if failed {
                round_failures += 1;
                drop(m);
                tokio::time::sleep(backoff(round_failures - 1)).await;
                continue;
            }
            round_failures = 0;
        }
        round_due = match m.next_wake(&peer_id, &mut commits).await {
            Wake::Remote(w) => {
                wait_failures = 0;
                let Waited { since, filter, raw } = *w;
                m.apply_waited(&peer_id, since, filter, raw).await
            }
            Wake::Local => {
                wait_failures = 0;
                true
            }
            Wake::Failed => {
                wait_failures += 1;
                drop(m);
                tokio::time::sleep(backoff(wait_failures - 1)).await;
                true
            }
        };
    }
}
