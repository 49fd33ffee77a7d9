//! The embedded default store: SQLite in WAL mode with `synchronous=FULL`, so a write that
//! returned is on disk and survives kill -9 (and power loss). One writer connection, a small
//! pool of readers; blocking work runs on tokio's blocking pool.
//!
//! The `records` table is the change log: one row per record holding its latest state, with a
//! unique `cursor` column. Paging reads `cursor > since ORDER BY cursor LIMIT n+1` from that
//! index, so a page costs n+1 index rows however long the log is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, Transaction};

use crate::config::{ConflictStrategy, SyncConfig};
use crate::error::{Error, Result};
use crate::hlc::{Hlc, HlcClock};
use crate::model::{
    Change, CollectionSettings, Document, Kind, NodeId, Record, RecordKey, Value, Version,
    VersionVector,
};
use crate::store::engine::{self, Ctx, Txn};
use crate::store::{
    ApplyMode, ApplyReport, Backlog, ChangeFilter, ChangesPage, Checkpoint, CheckpointDirection,
    CheckpointKey, ConflictEntry, DocumentPage, Store, StoreStats,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    node INTEGER NOT NULL,
    vv TEXT NOT NULL,
    value TEXT,
    conflicts TEXT,
    cursor INTEGER NOT NULL UNIQUE,
    existed INTEGER NOT NULL,
    PRIMARY KEY (collection, kind, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    peer INTEGER NOT NULL,
    direction TEXT NOT NULL,
    scope TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (peer, direction, scope)
);
CREATE TABLE IF NOT EXISTS origins (node INTEGER PRIMARY KEY, hlc INTEGER NOT NULL);
";

const RECORD_COLUMNS: &str =
    "collection, kind, id, hlc, node, vv, value, conflicts, cursor, existed";

struct Inner {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    node: NodeId,
    incarnation: String,
    clock: HlcClock,
}

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

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
    conn.pragma_update(None, "cache_size", -16_000)?;
    Ok(conn)
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn row_to_record(row: &Row) -> rusqlite::Result<Result<Record>> {
    let collection: String = row.get(0)?;
    let kind: String = row.get(1)?;
    let id: String = row.get(2)?;
    let hlc: i64 = row.get(3)?;
    let node: i64 = row.get(4)?;
    let vv: String = row.get(5)?;
    let value: Option<String> = row.get(6)?;
    let conflicts: Option<String> = row.get(7)?;
    let cursor: i64 = row.get(8)?;
    let existed: bool = row.get(9)?;
    Ok((|| {
        let kind = Kind::parse(&kind)
            .ok_or_else(|| Error::Storage(format!("unknown record kind '{kind}'")))?;
        Ok(Record {
            key: RecordKey {
                collection,
                kind,
                id,
            },
            version: Version {
                hlc: Hlc::from_i64(hlc),
                node: NodeId(node as u16),
                vv: serde_json::from_str::<VersionVector>(&vv)?,
            },
            value: match value {
                Some(v) => serde_json::from_str(&v)?,
                None => Value::Deleted,
            },
            conflicts: match conflicts {
                Some(c) => serde_json::from_str(&c)?,
                None => Vec::new(),
            },
            cursor: Hlc::from_i64(cursor),
            existed,
        })
    })())
}

fn collect_records(
    rows: rusqlite::MappedRows<'_, impl FnMut(&Row) -> rusqlite::Result<Result<Record>>>,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

fn head_of(conn: &Connection) -> Result<Hlc> {
    let max: Option<i64> = conn.query_row("SELECT MAX(cursor) FROM records", [], |r| r.get(0))?;
    let purged = meta_get(conn, "purged_head")?
        .and_then(|s| Hlc::from_hex(&s).ok())
        .unwrap_or(Hlc::ZERO);
    Ok(max.map(Hlc::from_i64).unwrap_or(Hlc::ZERO).max(purged))
}

/// The engine's view of a SQLite write transaction.
struct SqlTxn<'c> {
    tx: &'c Transaction<'c>,
}

impl Txn for SqlTxn<'_> {
    fn get(&mut self, key: &RecordKey) -> Result<Option<Record>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE collection = ?1 AND kind = ?2 AND id = ?3"
        ))?;
        let r = stmt
            .query_row(
                params![key.collection, key.kind.as_str(), key.id],
                row_to_record,
            )
            .optional()?;
        r.transpose()
    }

    fn put(&mut self, r: &Record) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO records (collection, kind, id, hlc, node, vv, value, conflicts, cursor, existed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(collection, kind, id) DO UPDATE SET
               hlc = excluded.hlc, node = excluded.node, vv = excluded.vv, value = excluded.value,
               conflicts = excluded.conflicts, cursor = excluded.cursor, existed = excluded.existed",
        )?;
        let value = match &r.value {
            Value::Deleted => None,
            v => Some(serde_json::to_string(v).map_err(|e| Error::Internal(e.to_string()))?),
        };
        let conflicts = if r.conflicts.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&r.conflicts).map_err(|e| Error::Internal(e.to_string()))?)
        };
        stmt.execute(params![
            r.key.collection,
            r.key.kind.as_str(),
            r.key.id,
            r.version.hlc.as_i64(),
            i64::from(r.version.node.0),
            serde_json::to_string(&r.version.vv).map_err(|e| Error::Internal(e.to_string()))?,
            value,
            conflicts,
            r.cursor.as_i64(),
            r.existed,
        ])?;
        Ok(())
    }

    fn bump_origins(&mut self, vv: &VersionVector) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO origins (node, hlc) VALUES (?1, ?2)
             ON CONFLICT(node) DO UPDATE SET hlc = MAX(hlc, excluded.hlc)",
        )?;
        for (node, hlc) in &vv.0 {
            stmt.execute(params![i64::from(node.0), hlc.as_i64()])?;
        }
        Ok(())
    }

    fn save_checkpoint(&mut self, cp: &Checkpoint) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO checkpoints (peer, direction, scope, incarnation, cursor, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(peer, direction, scope) DO UPDATE SET incarnation = excluded.incarnation,
               cursor = excluded.cursor, updated_ms = excluded.updated_ms",
        )?;
        stmt.execute(params![
            i64::from(cp.key.peer.0),
            cp.key.direction.as_str(),
            cp.key.scope,
            cp.incarnation,
            cp.cursor.as_i64(),
            cp.updated_ms as i64,
        ])?;
        Ok(())
    }

    fn live_document_keys(&mut self, collection: &str) -> Result<Vec<RecordKey>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id FROM records WHERE collection = ?1 AND kind = 'd' AND value IS NOT NULL",
        )?;
        let ids = stmt
            .query_map([collection], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids
            .into_iter()
            .map(|id| RecordKey::document(collection, &id))
            .collect())
    }
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
        conn.execute_batch(SCHEMA)?;
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
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(conn),
                readers: Mutex::new(Vec::new()),
                path,
                node,
                incarnation,
                clock,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in a write transaction on the blocking pool; commits only on `Ok`.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqlTxn, &Ctx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|e| e.into_inner());
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ctx = Ctx {
                node: inner.node,
                clock: &inner.clock,
            };
            let out = {
                let mut t = SqlTxn { tx: &tx };
                f(&mut t, &ctx)?
            };
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::Internal(format!("write task failed: {e}")))?
    }

    /// Runs `f` on a reader connection inside one read transaction (one snapshot).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
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
            if pool.len() < 8 {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }
}

fn query_records(tx: &Transaction, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Record>> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt.query_map(p, row_to_record)?;
    collect_records(rows)
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
                &format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = 'c' AND value IS NOT NULL ORDER BY collection"),
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
                &format!("SELECT {RECORD_COLUMNS} FROM records WHERE collection = ?1 AND kind = ?2 AND id = ?3"),
                params![key.collection, key.kind.as_str(), key.id],
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
                &format!("SELECT {RECORD_COLUMNS} FROM records WHERE collection = ?1 AND kind = 'd' AND id > ?2 AND value IS NOT NULL ORDER BY id LIMIT ?3"),
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
                &format!("SELECT {RECORD_COLUMNS} FROM records WHERE conflicts IS NOT NULL AND (?1 IS NULL OR collection = ?1) AND (?2 IS NULL OR (kind = 'd' AND id = ?2)) ORDER BY collection, kind, id"),
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
        self.read(|tx| {
            let mut s = StoreStats::default();
            let mut stmt = tx.prepare_cached(
                "SELECT kind, value IS NULL, COUNT(*), COALESCE(SUM(json_array_length(conflicts)), 0) FROM records GROUP BY 1, 2",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let kind: String = r.get(0)?;
                let deleted: bool = r.get(1)?;
                let n: i64 = r.get(2)?;
                let c: i64 = r.get(3)?;
                s.conflicts += c as u64;
                match (kind.as_str(), deleted) {
                    (_, true) => s.tombstones += n as u64,
                    ("c", false) => s.collections += n as u64,
                    _ => s.documents += n as u64,
                }
            }
            Ok(s)
        })
        .await
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
                &format!("SELECT {RECORD_COLUMNS} FROM records WHERE cursor > ?1 ORDER BY cursor LIMIT ?2"),
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

    async fn apply_changes(
        &self,
        changes: Vec<Change>,
        strategy: ConflictStrategy,
        mode: ApplyMode,
        checkpoint: Option<Checkpoint>,
    ) -> Result<ApplyReport> {
        self.write(move |t, c| engine::apply(t, c, changes, strategy, mode, checkpoint))
            .await
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
            let mut stmt = tx.prepare_cached(
                "SELECT collection, COUNT(*), MIN(cursor) FROM records WHERE cursor > ?1 GROUP BY collection",
            )?;
            let rows = stmt.query_map([since.as_i64()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })?;
            let mut b = Backlog { pending: 0, oldest: None };
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
                "SELECT MAX(cursor) FROM records WHERE value IS NULL AND hlc < ?1",
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
            let n = t.tx.execute(
                "DELETE FROM records WHERE value IS NULL AND hlc < ?1",
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
