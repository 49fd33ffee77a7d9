//! An in-memory [`Store`] for tests and experiments. Same write rules as SQLite (the shared
//! [`engine`]); a write works on a copy of the state and swaps it in on success, so a failed
//! write leaves nothing half-done. Not durable, by design.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::config::{ConflictStrategy, SyncConfig};
use crate::error::Result;
use crate::hlc::{Hlc, HlcClock};
use crate::model::{
    CollectionSettings, Document, Kind, NodeId, Record, RecordKey, Value, VersionVector,
};
use crate::store::engine::{self, Ctx, Txn};
use crate::store::{
    ApplyMode, ApplyReport, Backlog, ChangeFilter, ChangesPage, Checkpoint, CheckpointKey, Commits,
    ConflictEntry, DocumentPage, PreparedChanges, Store, StoreStats,
};

#[derive(Clone, Default)]
struct State {
    records: BTreeMap<RecordKey, Record>,
    log: BTreeMap<Hlc, RecordKey>,
    origins: BTreeMap<NodeId, Hlc>,
    checkpoints: BTreeMap<CheckpointKey, Checkpoint>,
    config: Option<SyncConfig>,
    purged_head: Hlc,
}

impl State {
    fn head(&self) -> Hlc {
        self.log
            .keys()
            .next_back()
            .copied()
            .unwrap_or(Hlc::ZERO)
            .max(self.purged_head)
    }
}

impl Txn for State {
    fn get(&mut self, key: &RecordKey) -> Result<Option<Record>> {
        Ok(self.records.get(key).cloned())
    }

    fn put_after(&mut self, record: &Record, _previous: Option<Hlc>) -> Result<()> {
        if let Some(old) = self.records.insert(record.key.clone(), record.clone()) {
            self.log.remove(&old.cursor);
        }
        self.log.insert(record.cursor, record.key.clone());
        Ok(())
    }

    fn bump_origins(&mut self, vv: &VersionVector) -> Result<()> {
        for (n, h) in &vv.0 {
            let e = self.origins.entry(*n).or_insert(*h);
            *e = (*e).max(*h);
        }
        Ok(())
    }

    fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.checkpoints
            .insert(checkpoint.key.clone(), checkpoint.clone());
        Ok(())
    }

    fn live_document_keys(&mut self, collection: &str) -> Result<Vec<RecordKey>> {
        Ok(self
            .records
            .values()
            .filter(|r| {
                r.key.collection == collection
                    && r.key.kind == Kind::Document
                    && r.value != Value::Deleted
            })
            .map(|r| r.key.clone())
            .collect())
    }
}

/// In-memory [`Store`].
pub struct MemoryStore {
    state: Mutex<State>,
    node: NodeId,
    incarnation: String,
    clock: HlcClock,
    commits: Commits,
}

impl MemoryStore {
    pub fn new(node: NodeId, clock: HlcClock) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            node,
            incarnation: format!("{:016x}", rand::random::<u64>()),
            clock,
            commits: Commits::default(),
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut State, &Ctx) -> Result<T>) -> Result<T> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = guard.clone();
        let ctx = Ctx {
            node: self.node,
            clock: &self.clock,
        };
        let out = f(&mut next, &ctx)?;
        *guard = next;
        drop(guard);
        self.commits.committed();
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn node_id(&self) -> NodeId {
        self.node
    }
    fn incarnation(&self) -> &str {
        &self.incarnation
    }
    fn clock(&self) -> &HlcClock {
        &self.clock
    }

    async fn put_collection(&self, name: &str, settings: CollectionSettings) -> Result<Record> {
        self.write(|t, c| engine::put_collection(t, c, name, settings))
    }

    async fn delete_collection(&self, name: &str) -> Result<Record> {
        self.write(|t, c| engine::delete_collection(t, c, name))
    }

    async fn get_collection(&self, name: &str) -> Result<Option<Record>> {
        Ok(self
            .read(|s| s.records.get(&RecordKey::collection(name)).cloned())
            .filter(|r| r.value != Value::Deleted))
    }

    async fn list_collections(&self) -> Result<Vec<Record>> {
        Ok(self.read(|s| {
            s.records
                .values()
                .filter(|r| r.key.kind == Kind::Collection && r.value != Value::Deleted)
                .cloned()
                .collect()
        }))
    }

    async fn put_document(&self, collection: &str, document: Document) -> Result<Record> {
        self.write(|t, c| engine::put_document(t, c, collection, document))
    }

    async fn delete_document(&self, collection: &str, id: &str) -> Result<Record> {
        self.write(|t, c| engine::delete_document(t, c, collection, id))
    }

    async fn get_record(&self, key: &RecordKey) -> Result<Option<Record>> {
        Ok(self.read(|s| s.records.get(key).cloned()))
    }

    async fn list_documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DocumentPage> {
        let after = after.unwrap_or("");
        Ok(self.read(|s| {
            let mut docs: Vec<Record> = s
                .records
                .range(RecordKey::document(collection, after)..)
                .map(|(_, r)| r)
                .take_while(|r| r.key.collection == collection && r.key.kind == Kind::Document)
                .filter(|r| r.key.id.as_str() > after && r.value != Value::Deleted)
                .take(limit + 1)
                .cloned()
                .collect();
            let next = if docs.len() > limit {
                docs.truncate(limit);
                docs.last().map(|d| d.key.id.clone())
            } else {
                None
            };
            DocumentPage {
                documents: docs,
                next,
            }
        }))
    }

    async fn conflicts(
        &self,
        collection: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<ConflictEntry>> {
        Ok(self.read(|s| {
            s.records
                .values()
                .filter(|r| !r.conflicts.is_empty())
                .filter(|r| collection.is_none_or(|c| r.key.collection == c))
                .filter(|r| id.is_none_or(|i| r.key.kind == Kind::Document && r.key.id == i))
                .map(|r| ConflictEntry {
                    collection: r.key.collection.clone(),
                    kind: r.key.kind,
                    id: r.key.id.clone(),
                    winner: r.version.clone(),
                    losers: r.conflicts.clone(),
                })
                .collect()
        }))
    }

    async fn stats(&self) -> Result<StoreStats> {
        Ok(self.read(|s| {
            let mut st = StoreStats::default();
            for r in s.records.values() {
                st.conflicts += r.conflicts.len() as u64;
                match (&r.value, r.key.kind) {
                    (Value::Deleted, _) => st.tombstones += 1,
                    (_, Kind::Collection) => st.collections += 1,
                    (_, Kind::Document) => st.documents += 1,
                }
            }
            st
        }))
    }

    fn commits(&self) -> tokio::sync::watch::Receiver<crate::store::Commit> {
        self.commits.subscribe()
    }

    async fn head(&self) -> Result<Hlc> {
        Ok(self.read(State::head))
    }

    async fn changes_since(
        &self,
        since: Hlc,
        limit: usize,
        filter: &ChangeFilter,
    ) -> Result<ChangesPage> {
        Ok(self.read(|s| {
            let scanned: Vec<&Record> = s
                .log
                .range((std::ops::Bound::Excluded(since), std::ops::Bound::Unbounded))
                .take(limit + 1)
                .filter_map(|(_, k)| s.records.get(k))
                .collect();
            let has_more = scanned.len() > limit;
            let scanned = &scanned[..scanned.len().min(limit)];
            ChangesPage {
                watermark: scanned.last().map_or_else(|| s.head(), |r| r.cursor),
                changes: scanned
                    .iter()
                    .map(|r| r.to_change())
                    .filter(|c| filter.admits(c))
                    .collect(),
                has_more,
            }
        }))
    }

    async fn apply_prepared(
        &self,
        batch: PreparedChanges,
        strategy: ConflictStrategy,
        mode: ApplyMode,
        checkpoint: Option<Checkpoint>,
    ) -> Result<ApplyReport> {
        self.write(|t, c| engine::apply(t, c, batch.changes, strategy, mode, checkpoint))
    }

    async fn checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>> {
        Ok(self.read(|s| s.checkpoints.get(key).cloned()))
    }

    async fn save_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.write(|t, _| t.save_checkpoint(&checkpoint))
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        Ok(self.read(|s| s.checkpoints.values().cloned().collect()))
    }

    async fn applied_origins(&self) -> Result<BTreeMap<NodeId, Hlc>> {
        Ok(self.read(|s| s.origins.clone()))
    }

    async fn backlog(&self, since: Hlc, collections: &[String]) -> Result<Backlog> {
        Ok(self.read(|s| {
            let mut b = Backlog {
                pending: 0,
                oldest: None,
            };
            for (cursor, key) in s
                .log
                .range((std::ops::Bound::Excluded(since), std::ops::Bound::Unbounded))
            {
                if collections.is_empty() || collections.contains(&key.collection) {
                    b.pending += 1;
                    b.oldest.get_or_insert(*cursor);
                }
            }
            b
        }))
    }

    async fn gc_tombstones(&self, horizon: Hlc, min_age_ms: u64) -> Result<usize> {
        self.write(|s, c| {
            let cutoff = Hlc::new(c.clock.wall_ms().saturating_sub(min_age_ms), 0).min(horizon);
            let doomed: Vec<Record> = s
                .records
                .values()
                .filter(|r| r.value == Value::Deleted && r.version.hlc < cutoff)
                .cloned()
                .collect();
            for r in &doomed {
                s.records.remove(&r.key);
                s.log.remove(&r.cursor);
                s.purged_head = s.purged_head.max(r.cursor);
            }
            Ok(doomed.len())
        })
    }

    async fn load_config(&self) -> Result<Option<SyncConfig>> {
        Ok(self.read(|s| s.config.clone()))
    }

    async fn save_config(&self, config: &SyncConfig) -> Result<()> {
        let config = config.clone();
        self.write(|s, _| {
            s.config = Some(config);
            Ok(())
        })
    }
}
