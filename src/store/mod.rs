//! Durable storage of records, the change log, checkpoints and conflicts.
//!
//! [`Store`] is what a RAG service implements to embed rag-sync. The write rules (versions,
//! commit cursors, conflict resolution, checkpoints in the same transaction) live once in
//! [`engine`] and run inside each implementation's write transaction.

pub mod engine;
pub mod memory;
pub mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::{ConflictStrategy, SyncConfig};
use crate::error::Result;
use crate::hlc::{Hlc, HlcClock};
use crate::model::{Change, CollectionSettings, Document, NodeId, Record};

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
// The wire types in `Store`'s signatures, for implementers.
pub use crate::wire::query::ChangeFilter;
pub use crate::wire::{Backlog, ChangesPage, ConflictEntry, ConflictReport, PageWriter};

/// What a page written by [`Store::write_changes`] held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    /// Changes written.
    pub count: usize,
    pub watermark: Hlc,
    pub has_more: bool,
}

/// Names a checkpoint: a peer (by node id), a direction, and the collection scope it covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointKey {
    pub peer: NodeId,
    pub direction: CheckpointDirection,
    /// Sorted collection names joined by ',' (or `*` for all), then ` -` and the excluded
    /// ones. A new scope starts from zero, which is how adding a collection resyncs it from
    /// the start.
    pub scope: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointDirection {
    /// Position in the peer's log up to which this node has applied.
    Pull,
    /// Position in this node's log up to which the peer has accepted.
    Push,
}

impl CheckpointDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointDirection::Pull => "pull",
            CheckpointDirection::Push => "push",
        }
    }
}

fn sorted_list(names: &[String]) -> String {
    let mut c: Vec<&str> = names.iter().map(String::as_str).collect();
    c.sort_unstable();
    c.dedup();
    c.join(",")
}

impl CheckpointKey {
    /// The key for a peer, direction and collection filter (echo suppression does not change
    /// which records a scope covers, so it is not part of the key).
    pub fn new(peer: NodeId, direction: CheckpointDirection, filter: &ChangeFilter) -> Self {
        let mut scope = if filter.collections.is_empty() {
            "*".to_string()
        } else {
            sorted_list(&filter.collections)
        };
        if !filter.exclude_collections.is_empty() {
            scope.push_str(" -");
            scope.push_str(&sorted_list(&filter.exclude_collections));
        }
        CheckpointKey {
            peer,
            direction,
            scope,
        }
    }
}

/// A saved position, valid only for the peer incarnation it was taken against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub key: CheckpointKey,
    pub incarnation: String,
    pub cursor: Hlc,
    pub updated_ms: u64,
}

/// How an applied batch treats a change it must refuse (clock drift, bad embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Refuse the whole batch; nothing is applied (a push request).
    AllOrNothing,
    /// Apply the changes before the refused one and checkpoint just before it (a pull), so
    /// the refused change is retried later and never skipped.
    Prefix,
}

/// Incoming changes with the work [`Store::prepare_changes`] did on them.
#[derive(Debug, Default)]
pub struct PreparedChanges {
    pub(crate) changes: Vec<Change>,
    /// Per change (same length as `changes`): its value as the store will keep it, if
    /// prepared.
    pub(crate) encoded: Vec<Option<String>>,
}

impl PreparedChanges {
    /// Changes with nothing prepared.
    pub fn plain(changes: Vec<Change>) -> Self {
        let encoded = vec![None; changes.len()];
        PreparedChanges { changes, encoded }
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// `other`'s changes after these, as one batch.
    pub fn append(&mut self, other: PreparedChanges) {
        self.changes.extend(other.changes);
        self.encoded.extend(other.encoded);
    }
}

/// What applying a batch did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Changes that altered local state.
    pub applied: usize,
    /// Changes already covered by local state.
    pub ignored: usize,
    pub conflicts: Vec<ConflictReport>,
    /// Why the batch stopped early (`Prefix` mode), if it did.
    pub stopped: Option<crate::error::Error>,
    /// The checkpoint saved with the batch, if any.
    pub checkpoint: Option<Hlc>,
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    pub collections: u64,
    pub documents: u64,
    pub tombstones: u64,
    pub conflicts: u64,
    /// Log rows replaced by newer versions and not yet deleted (space to be reclaimed).
    pub superseded: u64,
    /// Commits not yet copied from the write-ahead log into the database file (a store
    /// without one: never). Background work the node still has to do, like `superseded`.
    #[serde(default)]
    pub checkpoint_pending: bool,
}

/// A page of live documents in id order.
#[derive(Debug, Clone)]
pub struct DocumentPage {
    pub documents: Vec<Record>,
    pub next: Option<String>,
}

/// Tells waiting readers of the log that it may have moved: the last [`Commit`], replaced
/// after every committed write. A reader takes [`Commits::subscribe`] (or marks its receiver
/// seen) before it reads, so a commit that lands after the read is never missed.
#[derive(Debug)]
pub struct Commits(tokio::sync::watch::Sender<Commit>);

/// The last commit, as a waiting reader of the log sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Counts commits (wrapping).
    pub seq: u64,
    /// The nodes that wrote every version this commit may have added to the log, when the
    /// store knows them (a commit of pulled changes); `None` means any node.
    pub writers: Option<Vec<NodeId>>,
}

/// Most distinct writers a [`Commit`] names; beyond, it names none (any node).
pub const MAX_COMMIT_WRITERS: usize = 8;

impl Default for Commits {
    fn default() -> Self {
        Commits(tokio::sync::watch::Sender::new(Commit::default()))
    }
}

impl Commits {
    /// Called by a store after each write that committed.
    pub fn committed(&self) {
        self.0.send_modify(|c| {
            c.seq = c.seq.wrapping_add(1);
            c.writers = None;
        });
    }

    /// Called by a store after a commit whose new versions were all written by `writers`.
    pub fn committed_by(&self, writers: impl IntoIterator<Item = NodeId>) {
        let mut known: Vec<NodeId> = Vec::new();
        for w in writers {
            if !known.contains(&w) {
                if known.len() == MAX_COMMIT_WRITERS {
                    return self.committed();
                }
                known.push(w);
            }
        }
        self.0.send_modify(|c| {
            c.seq = c.seq.wrapping_add(1);
            c.writers = Some(known);
        });
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Commit> {
        self.0.subscribe()
    }
}

/// What a RAG service implements to embed rag-sync. Every method that returns `Ok` after a
/// write has made that write durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    /// Random id created with the store; a wiped or restored store gets a new one.
    fn incarnation(&self) -> &str;
    fn clock(&self) -> &HlcClock;

    // Data.
    async fn put_collection(&self, name: &str, settings: CollectionSettings) -> Result<Record>;
    async fn delete_collection(&self, name: &str) -> Result<Record>;
    async fn get_collection(&self, name: &str) -> Result<Option<Record>>;
    async fn list_collections(&self) -> Result<Vec<Record>>;
    async fn put_document(&self, collection: &str, document: Document) -> Result<Record>;
    async fn delete_document(&self, collection: &str, id: &str) -> Result<Record>;
    /// The record, live or tombstone.
    async fn get_record(&self, key: &crate::model::RecordKey) -> Result<Option<Record>>;
    async fn list_documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DocumentPage>;
    async fn conflicts(
        &self,
        collection: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<ConflictEntry>>;
    async fn stats(&self) -> Result<StoreStats>;

    // Sync.
    /// Changes after every commit (see [`Commits`]): what a waiting pull waits on.
    fn commits(&self) -> tokio::sync::watch::Receiver<Commit>;
    /// Why writes fail now (its disk is full), so that the node reports not ready; `None`
    /// while they can succeed.
    fn writes_failing(&self) -> Option<String> {
        None
    }
    /// Cursor of the latest commit (zero for an empty log).
    async fn head(&self) -> Result<Hlc>;
    async fn changes_since(
        &self,
        since: Hlc,
        limit: usize,
        filter: &ChangeFilter,
    ) -> Result<ChangesPage>;
    /// [`Store::changes_since`], written to `out` as a JSON array: exactly the bytes
    /// `serde_json` writes for [`ChangesPage::changes`]. Stores that keep records as JSON
    /// override it to copy them out instead of decoding and re-encoding every change.
    async fn write_changes(
        &self,
        since: Hlc,
        limit: usize,
        filter: &ChangeFilter,
        mut out: PageWriter,
    ) -> Result<(PageWriter, PageInfo)> {
        let page = self.changes_since(since, limit, filter).await?;
        let json = serde_json::to_vec(&page.changes)
            .map_err(|e| crate::error::Error::Internal(format!("encode changes: {e}")))?;
        out.write(&json)?;
        Ok((
            out,
            PageInfo {
                count: page.changes.len(),
                watermark: page.watermark,
                has_more: page.has_more,
            },
        ))
    }
    /// Applies remote changes in one transaction, saving `checkpoint` in the same one.
    async fn apply_changes(
        &self,
        changes: Vec<Change>,
        strategy: ConflictStrategy,
        mode: ApplyMode,
        checkpoint: Option<Checkpoint>,
    ) -> Result<ApplyReport> {
        self.apply_prepared(self.prepare_changes(changes), strategy, mode, checkpoint)
            .await
    }
    /// The part of applying `changes` that needs no transaction (the SQLite store encodes
    /// the documents as it will store them), so that a puller can do it while the previous
    /// batch is being written. The default does nothing.
    fn prepare_changes(&self, changes: Vec<Change>) -> PreparedChanges {
        PreparedChanges::plain(changes)
    }
    /// [`Store::apply_changes`] for a batch prepared by this store's `prepare_changes`.
    async fn apply_prepared(
        &self,
        batch: PreparedChanges,
        strategy: ConflictStrategy,
        mode: ApplyMode,
        checkpoint: Option<Checkpoint>,
    ) -> Result<ApplyReport>;
    async fn checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>>;
    async fn save_checkpoint(&self, checkpoint: Checkpoint) -> Result<()>;
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>>;
    /// Per origin node, the highest HLC of its writes this node has applied.
    async fn applied_origins(&self) -> Result<BTreeMap<NodeId, Hlc>>;
    async fn backlog(&self, since: Hlc, collections: &[String]) -> Result<Backlog>;
    /// Purges tombstones with an HLC below `horizon` and older than `min_age_ms`.
    async fn gc_tombstones(&self, horizon: Hlc, min_age_ms: u64) -> Result<usize>;

    // Configuration persisted with the data, so a restarted node resumes its peers.
    async fn load_config(&self) -> Result<Option<SyncConfig>>;
    async fn save_config(&self, config: &SyncConfig) -> Result<()>;
}
