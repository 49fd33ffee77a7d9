//! The embedded default store: SQLite in WAL mode with `synchronous=FULL`, so a write that
//! returned is on disk and survives kill -9 (and power loss); only changes pulled together
//! with their checkpoint skip the fsync (see `writer::Writer::run`). One writer connection on its
//! own thread, which commits concurrent writes together (group commit); a bounded pool of
//! reader connections on tokio's blocking pool; a background thread that copies the WAL back
//! into the database file.
//!
//! The `records` table is the change log, keyed by commit `cursor` (the table's rowid), and
//! only ever appended to: a new version of a record is a new row at the end. The `heads` table
//! maps each record's key to the cursor of its current row, with the version and flags the
//! write rules need, so deciding what to do with an incoming change never reads the log. A
//! row replaced by a newer one is listed in `superseded` (in the same transaction) and skipped
//! by readers; the writer deletes such rows once it is idle, or as it goes when too many wait.
//! Updating in place would rewrite the 4 KiB page each old row lives on (about 5.5 KB of WAL
//! per update, which the checkpoint then writes again); appending costs about 1.6 KB.
//!
//! Paging reads `cursor > since ORDER BY cursor LIMIT n+1` (less superseded rows), a range of
//! the table itself, so a page costs about n+1 rows read in log order however long the log is.

mod checkpointer;
mod page_json;
mod rows;
mod schema;
mod txn;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use crate::config::{ConflictStrategy, SyncConfig};
use crate::error::{Error, Result};
use crate::hlc::{Hlc, HlcClock};
use crate::model::{
    Change, ChangeBody, CollectionSettings, Document, NodeId, Record, RecordKey, Value,
};
use crate::store::engine::{self, Ctx, Txn};
use crate::store::{
    ApplyMode, ApplyReport, Backlog, ChangeFilter, ChangesPage, Checkpoint, CheckpointDirection,
    CheckpointKey, Commits, ConflictEntry, DocumentPage, PageInfo, PageWriter, PreparedChanges,
    Store, StoreStats,
};
use checkpointer::{CheckpointShared, Checkpointer};
use rows::{query_records, RECORD_COLUMNS, R_COLUMNS};
use schema::{head_of, meta_get, meta_set, CURRENT, NOT_SUPERSEDED};
use txn::{current_by_key_sql, SqlTxn};
use writer::Writer;

struct Inner {
    /// The writer thread, which owns the one write connection.
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    /// Bounds concurrent reads (and so reader connections and blocking threads).
    read_slots: tokio::sync::Semaphore,
    path: PathBuf,
    node: NodeId,
    incarnation: String,
    clock: Arc<HlcClock>,
    /// The checkpoint thread's state, for [`StoreStats::checkpoint_pending`].
    checkpoint: Arc<CheckpointShared>,
    commits: Commits,
}

/// Concurrent reads at most (each on its own connection and blocking thread).
const MAX_READERS: usize = 8;

/// Batches of more changes than this are applied in a transaction of their own.
const APPLY_ALONE: usize = 64;

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// SQLite page cache of the writer connection, KiB.
const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// SQLite page cache of each reader connection, KiB.
const READER_CACHE_KIB: i64 = 2 * 1024;

/// Size the WAL file is truncated to when it restarts, bytes.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Page cache per connection, in KiB. The writer keeps the hot index pages; readers
    // mostly stream the log in cursor order, which the OS page cache serves as well. Small
    // caches keep the node's memory flat however large the store grows.
    let cache_kib = if read_only {
        READER_CACHE_KIB
    } else {
        WRITER_CACHE_KIB
    };
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    Ok(conn)
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`. `node_id` is used when the store is
    /// new; for an existing store it must match the one it was created with.
    pub fn open(path: impl AsRef<Path>, node_id: Option<u16>, clock: HlcClock) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let conn = open_connection(&path, false)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Storage(format!(
                "could not enable WAL mode (got {mode})"
            )));
        }
        schema::create_or_upgrade(&conn)?;
        let node = match meta_get(&conn, "node_id")? {
            Some(existing) => {
                let existing = NodeId::from_hex(&existing).map_err(Error::Storage)?;
                if let Some(want) = node_id {
                    if want != existing.0 {
                        return Err(Error::BadRequest(format!(
                            "the store at {} belongs to node {existing}, not {:04x}; use its id or a new data directory",
                            path.display(),
                            want
                        )));
                    }
                }
                existing
            }
            None => {
                let id = NodeId(node_id.unwrap_or_else(|| rand::random::<u16>().max(1)));
                meta_set(&conn, "node_id", &id.to_hex())?;
                id
            }
        };
        let incarnation = match meta_get(&conn, "incarnation")? {
            Some(i) => i,
            None => {
                let i = random_hex(8);
                meta_set(&conn, "incarnation", &i)?;
                i
            }
        };
        // Timestamps must keep increasing across restarts, whatever the wall clock does.
        clock.advance_to(head_of(&conn)?);
        let own: Option<i64> = conn
            .query_row(
                "SELECT hlc FROM origins WHERE node = ?1",
                [i64::from(node.0)],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(own) = own {
            clock.advance_to(Hlc::from_i64(own));
        }
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let checkpointer = Checkpointer::start(open_connection(&path, false)?)?;
        let checkpoint = checkpointer.shared();
        let clock = Arc::new(clock);
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let writer = Writer::start(conn, node, clock.clone(), checkpointer, dir)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer,
                readers: Mutex::new(Vec::new()),
                read_slots: tokio::sync::Semaphore::new(MAX_READERS),
                path,
                node,
                incarnation,
                clock,
                checkpoint,
                commits: Commits::default(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Deletes every superseded row now, in one transaction (the writer otherwise does it
    /// in chunks when idle); the number deleted.
    pub async fn compact(&self) -> Result<usize> {
        self.inner
            .writer
            .run(true, true, |t, _| {
                let n = writer::compact_superseded(t.tx, i64::MAX)?;
                t.superseded_delta -= n as i64;
                Ok(n)
            })
            .await
    }

    /// Runs `f` in a write transaction on the writer thread; its changes are kept only if it
    /// returns `Ok`, and it is answered once they are committed (durable).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqlTxn, &Ctx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let out = self.inner.writer.run(false, true, f).await?;
        self.inner.commits.committed();
        Ok(out)
    }

    /// Runs `f` on a reader connection inside one read transaction (one snapshot).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        let permit = self
            .inner
            .read_slots
            .acquire()
            .await
            .map_err(|_| Error::Internal("the store is closed".into()))?;
        let out = tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.path, true)?,
            };
            let out = {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
                let out = f(&tx);
                tx.finish()?;
                out
            };
            let mut pool = inner.readers.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < MAX_READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")));
        drop(permit);
        out?
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn node_id(&self) -> NodeId {
        self.inner.node
    }

    fn incarnation(&self) -> &str {
        &self.inner.incarnation
    }

    fn clock(&self) -> &HlcClock {
        &self.inner.clock
    }

    async fn put_collection(&self, name: &str, settings: CollectionSettings) -> Result<Record> {
        let name = name.to_string();
        self.write(move |t, c| engine::put_collection(t, c, &name, settings))
            .await
    }

    async fn delete_collection(&self, name: &str) -> Result<Record> {
        let name = name.to_string();
        self.write(move |t, c| engine::delete_collection(t, c, &name))
            .await
    }

    async fn get_collection(&self, name: &str) -> Result<Option<Record>> {
        let rec = self.get_record(&RecordKey::collection(name)).await?;
        Ok(rec.filter(|r| r.value != Value::Deleted))
    }

    async fn list_collections(&self) -> Result<Vec<Record>> {
        self.read(|tx| {
            query_records(
                tx,
                &format!("SELECT {R_COLUMNS} FROM {CURRENT} WHERE h.kind = 'c' AND h.live = 1 ORDER BY h.collection"),
                [],
            )
        })
        .await
    }

    async fn put_document(&self, collection: &str, document: Document) -> Result<Record> {
        let collection = collection.to_string();
        self.write(move |t, c| engine::put_document(t, c, &collection, document))
            .await
    }

    async fn delete_document(&self, collection: &str, id: &str) -> Result<Record> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |t, c| engine::delete_document(t, c, &collection, &id))
            .await
    }

    async fn get_record(&self, key: &RecordKey) -> Result<Option<Record>> {
        let key = key.clone();
        self.read(move |tx| {
            let mut r = query_records(
                tx,
                &current_by_key_sql(key.kind),
                params![key.collection, key.id],
            )?;
            Ok(r.pop())
        })
        .await
    }

    async fn list_documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DocumentPage> {
        let collection = collection.to_string();
        let after = after.unwrap_or("").to_string();
        self.read(move |tx| {
            let mut docs = query_records(
                tx,
                &format!("SELECT {R_COLUMNS} FROM {CURRENT} WHERE h.collection = ?1 AND h.kind = 'd' AND h.id > ?2 AND h.live = 1 ORDER BY h.id LIMIT ?3"),
                params![collection, after, (limit + 1) as i64],
            )?;
            let next = if docs.len() > limit {
                docs.truncate(limit);
                docs.last().map(|d| d.key.id.clone())
            } else {
                None
            };
            Ok(DocumentPage { documents: docs, next })
        })
        .await
    }

    async fn conflicts(
        &self,
        collection: Option<&str>,
        id: Option<&str>,
    ) -> Result<Vec<ConflictEntry>> {
        let collection = collection.map(str::to_string);
        let id = id.map(str::to_string);
        self.read(move |tx| {
            let recs = query_records(
                tx,
                &format!("SELECT {R_COLUMNS} FROM {CURRENT} WHERE h.conflicted = 1 AND (?1 IS NULL OR h.collection = ?1) AND (?2 IS NULL OR (h.kind = 'd' AND h.id = ?2)) ORDER BY h.collection, h.kind, h.id"),
                params![collection, id],
            )?;
            Ok(recs
                .into_iter()
                .map(|r| ConflictEntry {
                    collection: r.key.collection,
                    kind: r.key.kind,
                    id: r.key.id,
                    winner: r.version,
                    losers: r.conflicts,
                })
                .collect())
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        // Counted from indexes (the partial ones hold only collections, tombstones and
        // records with conflicts), never by reading every record.
        let checkpoint_pending = self.inner.checkpoint.pending();
        self.read(move |tx| {
            let count = |sql: &str| -> Result<u64> {
                Ok(tx.prepare_cached(sql)?.query_row([], |r| r.get::<_, i64>(0))? as u64)
            };
            let total = count("SELECT COUNT(*) FROM heads")?;
            let tombstones = count("SELECT COUNT(*) FROM heads WHERE live = 0")?;
            let collections = count("SELECT COUNT(*) FROM heads WHERE kind = 'c' AND live = 1")?;
            let conflicts = count(&format!(
                "SELECT COALESCE(SUM(json_array_length(r.conflicts)), 0) FROM {CURRENT} WHERE h.conflicted = 1"
            ))?;
            Ok(StoreStats {
                collections,
                documents: total.saturating_sub(tombstones + collections),
                tombstones,
                conflicts,
                superseded: count("SELECT COUNT(*) FROM superseded")?,
                checkpoint_pending,
            })
        })
        .await
    }

    fn writes_failing(&self) -> Option<String> {
        self.inner.writer.failing()
    }

    fn commits(&self) -> tokio::sync::watch::Receiver<crate::store::Commit> {
        self.inner.commits.subscribe()
    }

    async fn head(&self) -> Result<Hlc> {
        self.read(|tx| head_of(tx)).await
    }

    async fn changes_since(
        &self,
        since: Hlc,
        limit: usize,
        filter: &ChangeFilter,
    ) -> Result<ChangesPage> {
        let filter = filter.clone();
        self.read(move |tx| {
            let mut rows = query_records(
                tx,
                &format!("SELECT {RECORD_COLUMNS} FROM records WHERE cursor > ?1 AND {NOT_SUPERSEDED} ORDER BY cursor LIMIT ?2"),
                params![since.as_i64(), (limit + 1) as i64],
            )?;
            let has_more = rows.len() > limit;
            rows.truncate(limit);
            let watermark = match rows.last() {
                Some(r) => r.cursor,
                None => head_of(tx)?,
            };
            let changes = rows
                .iter()
                .map(Record::to_change)
                .filter(|c| filter.admits(c))
                .collect();
            Ok(ChangesPage { changes, watermark, has_more })
        })
        .await
    }

    async fn write_changes(
        &self,
        since: Hlc,
        limit: usize,
        filter: &ChangeFilter,
        out: PageWriter,
    ) -> Result<(PageWriter, PageInfo)> {
        let filter = filter.clone();
        self.read(move |tx| page_json::write_page(tx, since, limit, &filter, out))
            .await
    }

    /// Encodes the documents as they will be stored, off the writer thread: most of them
    /// are stored as they came.
    fn prepare_changes(&self, changes: Vec<Change>) -> PreparedChanges {
        let encoded = changes
            .iter()
            .map(|c| match &c.body {
                ChangeBody::DocumentInsert { document, .. }
                | ChangeBody::DocumentUpdate { document, .. } => {
                    crate::wire::codec::document_json(document).ok()
                }
                _ => None,
            })
            .collect();
        PreparedChanges { changes, encoded }
    }

    async fn apply_prepared(
        &self,
        batch: PreparedChanges,
        strategy: ConflictStrategy,
        mode: ApplyMode,
        checkpoint: Option<Checkpoint>,
    ) -> Result<ApplyReport> {
        let alone = batch.len() > APPLY_ALONE;
        // Pulled changes commit with their checkpoint and need no fsync of their own (see
        // `Writer::run`); a push is acknowledged to its sender, which moves on, so it waits
        // for the disk.
        let synced = checkpoint.is_none();
        let PreparedChanges { changes, encoded } = batch;
        let writers: Vec<NodeId> = changes.iter().map(|c| c.version.node).collect();
        let (report, retired) = self
            .inner
            .writer
            .run(alone, synced, move |t, c| {
                t.encoded_values = encoded;
                let report = engine::apply(t, c, changes, strategy, mode, checkpoint);
                t.encoded_values = Vec::new();
                Ok((report?, std::mem::take(&mut t.retired)))
            })
            .await?;
        drop(retired);
        if report.applied > 0 {
            // A conflict may store a version of this node's making; otherwise every version
            // kept is one of the batch's.
            if report.conflicts.is_empty() {
                self.inner.commits.committed_by(writers);
            } else {
                self.inner.commits.committed();
            }
        }
        Ok(report)
    }

    async fn checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>> {
        let key = key.clone();
        self.read(move |tx| {
            Ok(tx
                .query_row(
                    "SELECT incarnation, cursor, updated_ms FROM checkpoints WHERE peer = ?1 AND direction = ?2 AND scope = ?3",
                    params![i64::from(key.peer.0), key.direction.as_str(), key.scope],
                    |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    },
                )
                .optional()?
                .map(|(incarnation, cursor, updated)| Checkpoint {
                    key,
                    incarnation,
                    cursor: Hlc::from_i64(cursor),
                    updated_ms: updated as u64,
                }))
        })
        .await
    }

    async fn save_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.write(move |t, _| t.save_checkpoint(&checkpoint)).await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT peer, direction, scope, incarnation, cursor, updated_ms FROM checkpoints ORDER BY 1, 2, 3",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (peer, dir, scope, incarnation, cursor, updated) = row?;
                out.push(Checkpoint {
                    key: CheckpointKey {
                        peer: NodeId(peer as u16),
                        direction: if dir == "push" {
                            CheckpointDirection::Push
                        } else {
                            CheckpointDirection::Pull
                        },
                        scope,
                    },
                    incarnation,
                    cursor: Hlc::from_i64(cursor),
                    updated_ms: updated as u64,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn applied_origins(&self) -> Result<BTreeMap<NodeId, Hlc>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached("SELECT node, hlc FROM origins ORDER BY node")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (n, h) = row?;
                out.insert(NodeId(n as u16), Hlc::from_i64(h));
            }
            Ok(out)
        })
        .await
    }

    async fn backlog(&self, since: Hlc, collections: &[String]) -> Result<Backlog> {
        let collections = collections.to_vec();
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT collection, COUNT(*), MIN(cursor) FROM records
                 WHERE cursor > ?1 AND {NOT_SUPERSEDED} GROUP BY collection"
            ))?;
            let rows = stmt.query_map([since.as_i64()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut b = Backlog {
                pending: 0,
                oldest: None,
            };
            for row in rows {
                let (c, n, min) = row?;
                if collections.is_empty() || collections.contains(&c) {
                    b.pending += n as u64;
                    let min = Hlc::from_i64(min);
                    b.oldest = Some(b.oldest.map_or(min, |o| o.min(min)));
                }
            }
            Ok(b)
        })
        .await
    }

    async fn gc_tombstones(&self, horizon: Hlc, min_age_ms: u64) -> Result<usize> {
        self.write(move |t, c| {
            let cutoff = Hlc::new(c.clock.wall_ms().saturating_sub(min_age_ms), 0).min(horizon);
            let max: Option<i64> = t.tx.query_row(
                "SELECT MAX(cursor) FROM heads INDEXED BY heads_tombstones WHERE live = 0 AND hlc < ?1",
                [cutoff.as_i64()],
                |r| r.get(0),
            )?;
            if let Some(max) = max {
                let purged = meta_get(t.tx, "purged_head")?
                    .and_then(|s| Hlc::from_hex(&s).ok())
                    .unwrap_or(Hlc::ZERO)
                    .max(Hlc::from_i64(max));
                meta_set(t.tx, "purged_head", &purged.to_hex())?;
            }
            // The tombstones' current rows go with them; older rows of the same records are
            // superseded already and go with the next compaction.
            t.tx.execute(
                "DELETE FROM records WHERE cursor IN
                   (SELECT cursor FROM heads INDEXED BY heads_tombstones WHERE live = 0 AND hlc < ?1)",
                [cutoff.as_i64()],
            )?;
            let n = t.tx.execute(
                "DELETE FROM heads WHERE live = 0 AND hlc < ?1",
                [cutoff.as_i64()],
            )?;
            Ok(n)
        })
        .await
    }

    async fn load_config(&self) -> Result<Option<SyncConfig>> {
        self.read(|tx| {
            meta_get(tx, "config")?
                .map(|s| serde_json::from_str(&s).map_err(Error::from))
                .transpose()
        })
        .await
    }

    async fn save_config(&self, config: &SyncConfig) -> Result<()> {
        let json = serde_json::to_string(config).map_err(|e| Error::Internal(e.to_string()))?;
        self.write(move |t, _| meta_set(t.tx, "config", &json))
            .await
    }
}

/// What the unit tests of the store's parts share.
#[cfg(test)]
mod testing {
    use std::sync::Arc;

    use crate::hlc::{HlcClock, ManualClock};
    use crate::model::Document;

    pub(super) fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub(super) fn clock(ms: u64) -> HlcClock {
        HlcClock::new(Arc::new(ManualClock::new(ms)), 500)
    }

    pub(super) fn doc(id: &str, content: &str) -> Document {
        Document {
            id: id.into(),
            content: content.into(),
            metadata: crate::model::Metadata::from_value(
                serde_json::json!({"b": [1, "x\"y"], "a": {"z": null}}),
            )
            .unwrap(),
            embedding: None,
        }
    }
}
