//! The embedded default store: SQLite in WAL mode with `synchronous=FULL`, so a write that
//! returned is on disk and survives kill -9 (and power loss). One writer connection on its
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{
    params, CachedStatement, Connection, OpenFlags, OptionalExtension, Row, Transaction,
};

use crate::config::{ConflictStrategy, SyncConfig};
use crate::error::{Error, Result};
use crate::hlc::{Hlc, HlcClock};
use crate::model::{
    Change, ChangeBody, CollectionSettings, Document, Kind, NodeId, Record, RecordKey, Value,
    Version, VersionVector,
};
use crate::store::engine::{self, Ctx, RecordHead, Txn};
use crate::store::{
    ApplyMode, ApplyReport, Backlog, ChangeFilter, ChangesPage, Checkpoint, CheckpointDirection,
    CheckpointKey, ConflictEntry, DocumentPage, PageInfo, PageWriter, PreparedChanges, Store,
    StoreStats,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    cursor INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    node INTEGER NOT NULL,
    vv TEXT NOT NULL,
    value TEXT,
    conflicts TEXT,
    existed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS heads (
    collection TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    hlc INTEGER NOT NULL,
    node INTEGER NOT NULL,
    vv TEXT NOT NULL,
    live INTEGER NOT NULL,
    conflicted INTEGER NOT NULL,
    PRIMARY KEY (collection, kind, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS heads_collections ON heads (collection) WHERE kind = 'c';
CREATE INDEX IF NOT EXISTS heads_tombstones ON heads (hlc) WHERE live = 0;
CREATE INDEX IF NOT EXISTS heads_conflicts ON heads (collection, kind, id) WHERE conflicted = 1;
CREATE TABLE IF NOT EXISTS superseded (cursor INTEGER PRIMARY KEY);
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

/// Stores created before `heads` existed held one row per record in `records`, with a unique
/// index on the key; every row is current, so `heads` is built from them as they are.
const MIGRATE_TO_HEADS: &str = "
INSERT INTO heads (collection, kind, id, cursor, hlc, node, vv, live, conflicted)
    SELECT collection, kind, id, cursor, hlc, node, vv, value IS NOT NULL, conflicts IS NOT NULL
    FROM records;
DROP INDEX IF EXISTS records_key;
DROP INDEX IF EXISTS records_collections;
DROP INDEX IF EXISTS records_tombstones;
DROP INDEX IF EXISTS records_conflicts;
";

/// Stores created before the log was keyed by its cursor kept records in a `WITHOUT ROWID`
/// table keyed by (collection, kind, id). Rows of a kilobyte or more overflow such a
/// table's pages (about 4 KiB of disk and WAL per document) and a log read hops through a
/// secondary index; this moves them, in one transaction, into the current layout.
const MIGRATE_WITHOUT_ROWID: &str = "
CREATE TABLE records_v2 (
    cursor INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    node INTEGER NOT NULL,
    vv TEXT NOT NULL,
    value TEXT,
    conflicts TEXT,
    existed INTEGER NOT NULL
);
INSERT INTO records_v2 (cursor, collection, kind, id, hlc, node, vv, value, conflicts, existed)
    SELECT cursor, collection, kind, id, hlc, node, vv, value, conflicts, existed
    FROM records ORDER BY cursor;
DROP TABLE records;
ALTER TABLE records_v2 RENAME TO records;
";

const RECORD_COLUMNS: &str =
    "collection, kind, id, hlc, node, vv, value, conflicts, cursor, existed";

/// [`RECORD_COLUMNS`] of `records r`, for queries that join `heads h`.
const R_COLUMNS: &str =
    "r.collection, r.kind, r.id, r.hlc, r.node, r.vv, r.value, r.conflicts, r.cursor, r.existed";

/// Current records: `heads h` joined to their rows `records r`.
const CURRENT: &str = "heads h JOIN records r ON r.cursor = h.cursor";

/// Log rows that no newer row of the same record has replaced.
const NOT_SUPERSEDED: &str =
    "NOT EXISTS (SELECT 1 FROM superseded s WHERE s.cursor = records.cursor)";

struct Inner {
    /// Jobs for the writer thread, which owns the one write connection.
    writer: Mutex<Option<std::sync::mpsc::Sender<WriteJob>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    /// Bounds concurrent reads (and so reader connections and blocking threads).
    read_slots: tokio::sync::Semaphore,
    path: PathBuf,
    node: NodeId,
    incarnation: String,
    clock: Arc<HlcClock>,
    /// The checkpoint thread's state, for [`StoreStats::checkpoint_pending`].
    checkpoint: Arc<CheckpointShared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer thread once it has finished what was queued.
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self
            .writer_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// Concurrent reads at most (each on its own connection and blocking thread).
const MAX_READERS: usize = 8;

/// Batches of more changes than this are applied in a transaction of their own.
const APPLY_ALONE: usize = 64;

/// Most queued writes the writer thread commits together.
const MAX_GROUP_COMMIT: usize = 64;

/// The body of a queued write: true if it succeeded (its changes are kept).
type WriteRun = Box<dyn FnOnce(&mut SqlTxn, &Ctx) -> bool + Send>;

/// Reports a queued write's outcome once its transaction has committed, or failed to.
type WriteAnswer = Box<dyn FnOnce(Result<()>) + Send>;

/// One write for the writer thread.
struct WriteJob {
    /// Runs inside the shared transaction (in its own savepoint when it shares it); true if
    /// it succeeded (its changes are kept).
    run: WriteRun,
    /// Answers the caller once the transaction has committed, or failed to.
    answer: WriteAnswer,
    /// Runs in a transaction of its own (a large batch: a savepoint would copy every page
    /// it changes into SQLite's statement journal first).
    alone: bool,
}

/// The writer thread: takes the next write and whatever others are queued behind it, runs
/// each in its own savepoint of one transaction (a failing write rolls back only itself),
/// commits once, and only then answers each of them. Concurrent writers thus share one
/// commit and one fsync (group commit) with the same guarantee as before: a write is
/// answered only when it is durable. All writes run on this one thread, so however many
/// requests write at once, they neither hold blocking threads waiting for the writer lock
/// nor spread allocations over that many threads.
fn writer_loop(
    mut conn: Connection,
    jobs: std::sync::mpsc::Receiver<WriteJob>,
    node: NodeId,
    clock: Arc<HlcClock>,
    checkpointer: Checkpointer,
) {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    let mut carried: Option<WriteJob> = None;
    // Superseded rows waiting to be deleted (counted once here, then kept up to date by
    // what each commit reports); compaction runs once no write has come for
    // `COMPACT_WHEN_IDLE`, and then chunk after chunk for as long as none comes.
    let mut superseded = count_superseded(&conn);
    let mut idle = false;
    loop {
        let next = match carried.take() {
            Some(j) => Some(j),
            None if superseded == 0 => match jobs.recv() {
                Ok(j) => Some(j),
                Err(_) => return,
            },
            None if idle => match jobs.try_recv() {
                Ok(j) => Some(j),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            },
            None => match jobs.recv_timeout(COMPACT_WHEN_IDLE) {
                Ok(j) => Some(j),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        let Some(first) = next else {
            idle = true;
            superseded = compact_step(&mut conn, &checkpointer);
            continue;
        };
        idle = false;
        let mut batch = vec![first];
        while !batch[0].alone && batch.len() < MAX_GROUP_COMMIT {
            match jobs.try_recv() {
                Ok(j) if j.alone => {
                    carried = Some(j);
                    break;
                }
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let mut answers = Vec::with_capacity(batch.len());
        let outcome = run_group(&mut conn, batch, node, &clock, &mut answers);
        match outcome {
            Ok(delta) => {
                tracing::trace!(
                    writes = answers.len(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "write transaction committed"
                );
                checkpointer.committed();
                for a in answers {
                    a(Ok(()));
                }
                if let Err(e) = checkpointer.bound_wal(&conn) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                superseded = superseded.saturating_add_signed(delta);
                // Under a steady stream of updates the writer is never idle: past the limit,
                // each commit is followed by one chunk of compaction, so the space taken by
                // old rows stays bounded.
                if superseded > SUPERSEDED_LIMIT {
                    superseded = compact_step(&mut conn, &checkpointer);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for a in answers {
                    a(Err(Error::Storage(format!(
                        "write transaction failed: {msg}"
                    ))));
                }
            }
        }
    }
}

/// How long the writer waits for another write before it deletes superseded rows.
const COMPACT_WHEN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Superseded rows deleted per compaction transaction: a write that arrives meanwhile waits
/// for one chunk at most (a few milliseconds).
const COMPACT_CHUNK: i64 = 2_000;

/// Superseded rows past which compaction no longer waits for an idle writer (about 50 MiB
/// of old 1 KiB documents).
const SUPERSEDED_LIMIT: u64 = 50_000;

fn count_superseded(conn: &Connection) -> u64 {
    conn.query_row("SELECT COUNT(*) FROM superseded", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot count superseded rows");
        0
    })
}

/// Deletes up to `limit` superseded rows, oldest first, in the caller's transaction.
fn compact_superseded(tx: &Connection, limit: i64) -> Result<usize> {
    tx.prepare_cached(
        "DELETE FROM records WHERE cursor IN
           (SELECT cursor FROM superseded ORDER BY cursor LIMIT ?1)",
    )?
    .execute([limit])?;
    Ok(tx
        .prepare_cached(
            "DELETE FROM superseded WHERE cursor IN
               (SELECT cursor FROM superseded ORDER BY cursor LIMIT ?1)",
        )?
        .execute([limit])?)
}

/// One compaction transaction on the writer's connection; the superseded rows left after it.
fn compact_step(conn: &mut Connection, checkpointer: &Checkpointer) -> u64 {
    let started = std::time::Instant::now();
    let outcome = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(Error::from)
        .and_then(|tx| {
            let n = compact_superseded(&tx, COMPACT_CHUNK)?;
            tx.commit()?;
            Ok(n)
        });
    match outcome {
        Ok(n) => {
            tracing::trace!(
                rows = n,
                elapsed_us = started.elapsed().as_micros() as u64,
                "superseded rows deleted"
            );
            checkpointer.committed();
            if let Err(e) = checkpointer.bound_wal(conn) {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
            count_superseded(conn)
        }
        Err(e) => {
            // Readers skip superseded rows whether or not they are deleted: nothing is wrong
            // but space; the next idle period tries again.
            tracing::warn!(error = %e, "compaction failed");
            0
        }
    }
}

/// One group commit; every job's answer ends up in `answers`, run or not.
fn run_group(
    conn: &mut Connection,
    batch: Vec<WriteJob>,
    node: NodeId,
    clock: &HlcClock,
    answers: &mut Vec<WriteAnswer>,
) -> Result<i64> {
    let ctx = Ctx { node, clock };
    // Superseded rows added (or, by compaction, removed) by the writes that are kept.
    let mut delta = 0i64;
    let run_caught = |run: WriteRun, t: &mut SqlTxn| -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(t, &ctx))).unwrap_or_else(
            |_| {
                tracing::error!("a store write panicked; it was rolled back");
                false
            },
        )
    };
    let alone = batch.len() == 1;
    let mut pending = batch.into_iter();
    let mut tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            answers.extend(pending.map(|j| j.answer));
            return Err(e.into());
        }
    };
    if alone {
        // A transaction of its own: no savepoint; a failed write rolls it back.
        if let Some(job) = pending.next() {
            answers.push(job.answer);
            let (ok, job_delta) = {
                let mut t = SqlTxn::new(&tx);
                (run_caught(job.run, &mut t), t.superseded_delta)
            };
            if !ok {
                drop(tx); // rolls back; the answer carries the write's own error
                return Ok(0);
            }
            delta += job_delta;
        }
    }
    while let Some(job) = pending.next() {
        answers.push(job.answer);
        let sp = match tx.savepoint() {
            Ok(sp) => sp,
            Err(e) => {
                answers.extend(pending.map(|j| j.answer));
                return Err(e.into());
            }
        };
        let (ok, job_delta) = {
            let mut t = SqlTxn::new(&sp);
            (run_caught(job.run, &mut t), t.superseded_delta)
        };
        if ok {
            delta += job_delta;
            if let Err(e) = sp.commit() {
                answers.extend(pending.map(|j| j.answer));
                return Err(e.into());
            }
        } else {
            drop(sp); // rolls back to the savepoint and releases it
        }
    }
    tx.commit()?;
    Ok(delta)
}

/// WAL frames (about 64 MiB of 4 KiB pages) after which the writer completes a checkpoint
/// itself between two transactions. Under a continuous stream of writes the background
/// checkpoint never quite catches up with the last commit, and SQLite restarts the WAL from
/// its beginning only once everything in it has been copied back: without this, the WAL
/// would grow for as long as the writes keep coming.
const WAL_FRAMES_LIMIT: i64 = 16_384;

/// Least time between two background checkpoints.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Size the WAL file is truncated to when it restarts, bytes.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Copies the WAL back into the database file on its own thread and connection (a PASSIVE
/// checkpoint, which never blocks the writer or readers), so that a commit pays only for
/// appending its own frames and syncing them. SQLite's automatic checkpoint would run inside
/// the commit of whichever write crossed the threshold: every few sync pages, a commit took
/// several times longer while it rewrote and synced the database file. Durability is the
/// same: a commit is durable once its WAL frames are synced (`synchronous=FULL`); the
/// checkpoint only moves data that is durable already.
struct Checkpointer {
    shared: Arc<CheckpointShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct CheckpointShared {
    state: Mutex<CheckpointState>,
    wake: std::sync::Condvar,
    /// Frames in the WAL, as of the last checkpoint.
    wal_frames: std::sync::atomic::AtomicI64,
}

#[derive(Default)]
struct CheckpointState {
    /// Commits since the last checkpoint started.
    commits: u64,
    /// The last checkpoint left frames behind (a reader still needed them): try again.
    behind: bool,
    running: bool,
    stop: bool,
}

impl CheckpointShared {
    fn state(&self) -> std::sync::MutexGuard<'_, CheckpointState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether some commit has not been copied into the database file yet.
    fn pending(&self) -> bool {
        let st = self.state();
        st.commits > 0 || st.behind || st.running
    }
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer> {
        let conn = open_connection(path, false)?;
        let shared = Arc::new(CheckpointShared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || loop {
                {
                    let mut st = s.state();
                    while st.commits == 0 && !st.behind && !st.stop {
                        st = s.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                    if st.stop {
                        return;
                    }
                    // Commits that come within the interval share one checkpoint: a page
                    // written by several of them is copied back once.
                    let until = std::time::Instant::now() + CHECKPOINT_INTERVAL;
                    while !st.stop {
                        let left = until.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        st = s
                            .wake
                            .wait_timeout(st, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    st.commits = 0;
                    st.running = true;
                }
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                let behind = match done {
                    Ok((log, copied)) => {
                        s.wal_frames
                            .store(log, std::sync::atomic::Ordering::Relaxed);
                        copied < log
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                        true
                    }
                };
                let mut st = s.state();
                st.running = false;
                st.behind = behind;
            })
            .map_err(|e| Error::Storage(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// After a commit, before its writes are answered (so that no one who saw a write
    /// succeed can see `checkpoint_pending` false without it): wakes the thread.
    fn committed(&self) {
        self.shared.state().commits += 1;
        self.shared.wake.notify_one();
    }

    /// After [`Checkpointer::committed`], once the WAL is large: completes a checkpoint on
    /// the writer's connection, so that the next write starts the WAL over (see
    /// [`WAL_FRAMES_LIMIT`]). The background thread has usually copied nearly everything.
    fn bound_wal(&self, writer: &Connection) -> Result<()> {
        if self
            .shared
            .wal_frames
            .load(std::sync::atomic::Ordering::Relaxed)
            > WAL_FRAMES_LIMIT
        {
            writer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            // The next write starts the WAL over, unless a reader still holds an older
            // snapshot; the background thread reports the size it finds next.
            self.shared
                .wal_frames
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.state().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// SQLite page cache of the writer connection, KiB.
const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// SQLite page cache of each reader connection, KiB.
const READER_CACHE_KIB: i64 = 2 * 1024;

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

/// A version vector as stored in the `vv` columns: empty when it holds nothing but the
/// version's own write (`{node: hlc}`, a record last written by a node that had seen no other
/// node's write of it, the usual case), which keeps a `heads` row about a third smaller (and
/// the pages an update touches fewer); its JSON otherwise.
fn vv_column(version: &Version) -> Result<String> {
    let vv = &version.vv.0;
    if vv.len() == 1 && vv.get(&version.node) == Some(&version.hlc) {
        return Ok(String::new());
    }
    serde_json::to_string(&version.vv).map_err(|e| Error::Internal(e.to_string()))
}

/// The version vector a `vv` column holds for a version written by `node` at `hlc`.
fn vv_from_column(text: &str, hlc: Hlc, node: NodeId) -> Result<VersionVector> {
    if text.is_empty() {
        return Ok(VersionVector([(node, hlc)].into_iter().collect()));
    }
    Ok(serde_json::from_str(text)?)
}

/// Writes a `vv` column's version vector as JSON.
fn write_vv_json(out: &mut Vec<u8>, text: &str, hlc: Hlc, node: NodeId) {
    if text.is_empty() {
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(node.to_hex().as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(hlc.to_hex().as_bytes());
        out.extend_from_slice(b"\"}");
    } else {
        out.extend_from_slice(text.as_bytes());
    }
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
                vv: vv_from_column(&vv, Hlc::from_i64(hlc), NodeId(node as u16))?,
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

/// Size of the pieces a JSON page is built in.
const CHUNK: usize = 64 * 1024;

/// Appends the change for a `records` row (in [`RECORD_COLUMNS`] order) to `out` as JSON, the
/// same bytes `serde_json` writes for [`Record::to_change`], if `filter` admits it. The stored
/// value and vector are JSON already: they are copied, not decoded and re-encoded. A row
/// whose value is not in the layout this store writes goes through the generic path.
fn write_change_json(row: &Row, filter: &ChangeFilter, out: &mut Vec<u8>) -> Result<bool> {
    use rusqlite::types::ValueRef;
    let text = |i: usize| -> Result<Option<&str>> {
        match row.get_ref(i)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(Some)
                .map_err(|e| Error::Storage(format!("stored text is not UTF-8: {e}"))),
            other => Err(Error::Storage(format!(
                "unexpected stored type {:?} in column {i}",
                other.data_type()
            ))),
        }
    };
    let collection = text(0)?.unwrap_or_default();
    let kind = text(1)?.unwrap_or_default();
    let id = text(2)?.unwrap_or_default();
    let hlc = Hlc::from_i64(row.get(3)?);
    let node = NodeId(row.get::<_, i64>(4)? as u16);
    let vv = text(5)?.unwrap_or_default();
    let value = text(6)?;
    let conflicts = text(7)?;
    let cursor = Hlc::from_i64(row.get(8)?);
    let existed: bool = row.get(9)?;

    if !filter.collections.is_empty() && !filter.collections.iter().any(|c| c == collection) {
        return Ok(false);
    }
    if filter.exclude_collections.iter().any(|c| c == collection) {
        return Ok(false);
    }
    if let Some(origin) = filter.exclude_origin {
        if node == origin && conflicts.is_none() {
            let vv = vv_from_column(vv, hlc, node)?;
            if vv.0.keys().all(|n| *n == origin) {
                return Ok(false);
            }
        }
    }

    const DOC: &str = "{\"kind\":\"document\",";
    const COLL: &str = "{\"kind\":\"collection\",";
    let (op, body) = match (kind, value) {
        ("d", Some(v)) if v.starts_with(DOC) && v.ends_with('}') => (
            if existed {
                "DocumentUpdate"
            } else {
                "DocumentInsert"
            },
            Some(&v[DOC.len()..v.len() - 1]),
        ),
        ("c", Some(v)) if v.starts_with(COLL) && v.ends_with('}') => {
            ("CollectionCreate", Some(&v[COLL.len()..v.len() - 1]))
        }
        ("d", None) => ("DocumentDelete", None),
        ("c", None) => ("CollectionDelete", None),
        _ => {
            let record = row_to_record(row)??;
            if filter.admits(&record.to_change()) {
                serde_json::to_writer(&mut *out, &record.to_change())
                    .map_err(|e| Error::Internal(format!("encode change: {e}")))?;
                return Ok(true);
            }
            return Ok(false);
        }
    };
    let str_json = |out: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(&mut *out, s).map_err(|e| Error::Internal(e.to_string()))
    };
    out.extend_from_slice(b"{\"cursor\":\"");
    out.extend_from_slice(cursor.to_hex().as_bytes());
    out.extend_from_slice(b"\",\"version\":{\"hlc\":\"");
    out.extend_from_slice(hlc.to_hex().as_bytes());
    out.extend_from_slice(b"\",\"node\":\"");
    out.extend_from_slice(node.to_hex().as_bytes());
    out.extend_from_slice(b"\",\"vv\":");
    write_vv_json(out, vv, hlc, node);
    out.extend_from_slice(b"},\"op\":\"");
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(b"\",\"collection\":");
    str_json(out, collection)?;
    match body {
        Some(fields) => {
            out.push(b',');
            out.extend_from_slice(fields.as_bytes());
        }
        None if kind == "d" => {
            out.extend_from_slice(b",\"id\":");
            str_json(out, id)?;
        }
        None => {}
    }
    if let Some(c) = conflicts {
        out.extend_from_slice(b",\"conflicts\":");
        out.extend_from_slice(c.as_bytes());
    }
    out.push(b'}');
    Ok(true)
}

/// A record kind as an SQL literal. Lookups by key name the kind in their text rather than
/// binding it: `heads` has a partial index on `kind = 'c'`, and when the planner weighs it
/// for a join on a bound kind, SQLite prepares the statement again on every execution (each
/// local write and conflict planned its lookup anew: about half the writer's time in the
/// 5-node mesh). Single-table lookups by the whole key skip that planning, but are written
/// the same way.
fn kind_literal(kind: Kind) -> &'static str {
    match kind {
        Kind::Collection => "'c'",
        Kind::Document => "'d'",
    }
}

/// A record's current row by key (?1 collection, ?2 id).
fn current_by_key_sql(kind: Kind) -> String {
    format!(
        "SELECT {R_COLUMNS} FROM {CURRENT}
         WHERE h.collection = ?1 AND h.kind = {} AND h.id = ?2",
        kind_literal(kind)
    )
}

/// A record's head by key (?1 collection, ?2 id).
fn head_by_key_sql(kind: Kind) -> String {
    format!(
        "SELECT hlc, node, vv, live, conflicted, cursor
         FROM heads WHERE collection = ?1 AND kind = {} AND id = ?2",
        kind_literal(kind)
    )
}

/// Moves a head to its record's new row: ?1..?9 are the head's columns in `heads` order
/// (?2, the kind, is in the text instead), ?10 the cursor it must be at now.
fn head_update_sql(kind: Kind) -> String {
    format!(
        "UPDATE heads SET cursor = ?4, hlc = ?5, node = ?6, vv = ?7, live = ?8, conflicted = ?9
         WHERE collection = ?1 AND kind = {} AND id = ?3 AND cursor = ?10",
        kind_literal(kind)
    )
}

/// Appends a record's row to the log (its cursor is new, so it never replaces a row).
const APPEND_RECORD: &str =
    "INSERT INTO records (collection, kind, id, hlc, node, vv, value, conflicts, cursor, existed)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Index of a kind in per-kind arrays.
fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Collection => 0,
        Kind::Document => 1,
    }
}

/// The statements a write runs for every record it stores, each taken from the statement
/// cache once per write rather than looked up by its text (hashed and compared) per record.
#[derive(Default)]
struct KeyStatements<'c> {
    append: Option<CachedStatement<'c>>,
    insert_head: Option<CachedStatement<'c>>,
    supersede: Option<CachedStatement<'c>>,
    /// By [`kind_index`].
    head: [Option<CachedStatement<'c>>; 2],
    update_head: [Option<CachedStatement<'c>>; 2],
}

/// The statement in `slot`, taken from `tx`'s cache the first time.
fn held<'s, 'c>(
    slot: &'s mut Option<CachedStatement<'c>>,
    tx: &'c Connection,
    sql: impl FnOnce() -> String,
) -> Result<&'s mut CachedStatement<'c>> {
    let stmt = match slot.take() {
        Some(stmt) => stmt,
        None => tx.prepare_cached(&sql())?,
    };
    Ok(slot.insert(stmt))
}

/// The engine's view of a SQLite write transaction.
struct SqlTxn<'c> {
    /// The connection, inside the write transaction (and the job's savepoint).
    tx: &'c Connection,
    stmts: KeyStatements<'c>,
    /// Stored JSON of the values of the batch being applied, by change index, encoded
    /// before the batch reached the writer thread (documents only).
    encoded_values: Vec<Option<String>>,
    /// Records stored from a batch, handed back with its outcome to be freed off the writer
    /// thread (freeing a page of documents is a few percent of the writer's time).
    retired: Vec<Record>,
    /// Rows this write added to `superseded` (less those it deleted).
    superseded_delta: i64,
}

impl<'c> SqlTxn<'c> {
    fn new(tx: &'c Connection) -> Self {
        SqlTxn {
            tx,
            stmts: KeyStatements::default(),
            encoded_values: Vec::new(),
            retired: Vec::new(),
            superseded_delta: 0,
        }
    }

    /// Appends `r`'s row with its value encoded as `value` (None for a tombstone) and moves
    /// its head there.
    fn put_row(&mut self, r: &Record, value: Option<String>, previous: Option<Hlc>) -> Result<()> {
        let enc = |e: serde_json::Error| Error::Internal(e.to_string());
        let conflicts = if r.conflicts.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&r.conflicts).map_err(enc)?)
        };
        let vv = vv_column(&r.version)?;
        let live = value.is_some();
        let conflicted = conflicts.is_some();
        held(&mut self.stmts.append, self.tx, || APPEND_RECORD.into())?.execute(params![
            r.key.collection,
            r.key.kind.as_str(),
            r.key.id,
            r.version.hlc.as_i64(),
            i64::from(r.version.node.0),
            vv,
            value,
            conflicts,
            r.cursor.as_i64(),
            r.existed,
        ])?;
        // The head's columns, bound by number in both statements below (the update names
        // the kind as a literal, see `kind_literal`, and leaves ?2 unused).
        let head = params![
            r.key.collection,
            r.key.kind.as_str(),
            r.key.id,
            r.cursor.as_i64(),
            r.version.hlc.as_i64(),
            i64::from(r.version.node.0),
            vv,
            live,
            conflicted,
        ];
        let Some(previous) = previous else {
            // Known to be absent: a plain insert (a duplicate key fails, never overwrites).
            held(&mut self.stmts.insert_head, self.tx, || {
                "INSERT INTO heads (collection, kind, id, cursor, hlc, node, vv, live, conflicted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                    .into()
            })?
            .execute(head)?;
            return Ok(());
        };
        // Known to be current at `previous`: the head moves to the new row, and the old row
        // is superseded (skipped by readers from now on, deleted later).
        let mut update = head.to_vec();
        let previous_cursor = previous.as_i64();
        update.push(&previous_cursor);
        let kind = r.key.kind;
        let n = held(
            &mut self.stmts.update_head[kind_index(kind)],
            self.tx,
            || head_update_sql(kind),
        )?
        .execute(update.as_slice())?;
        if n != 1 {
            return Err(Error::Storage(format!(
                "record {:?} is no longer at cursor {previous}",
                r.key
            )));
        }
        held(&mut self.stmts.supersede, self.tx, || {
            "INSERT INTO superseded (cursor) VALUES (?1)".into()
        })?
        .execute([previous.as_i64()])?;
        self.superseded_delta += 1;
        Ok(())
    }
}

impl Txn for SqlTxn<'_> {
    fn get(&mut self, key: &RecordKey) -> Result<Option<Record>> {
        let mut stmt = self.tx.prepare_cached(&current_by_key_sql(key.kind))?;
        let r = stmt
            .query_row(params![key.collection, key.id], row_to_record)
            .optional()?;
        r.transpose()
    }

    fn get_head(&mut self, key: &RecordKey) -> Result<Option<RecordHead>> {
        let kind = key.kind;
        let stmt = held(&mut self.stmts.head[kind_index(kind)], self.tx, || {
            head_by_key_sql(kind)
        })?;
        let row = stmt
            .query_row(params![key.collection, key.id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()?;
        row.map(|(hlc, node, vv, live, has_conflicts, cursor)| {
            let (hlc, node) = (Hlc::from_i64(hlc), NodeId(node as u16));
            Ok(RecordHead {
                version: Version {
                    hlc,
                    node,
                    vv: vv_from_column(&vv, hlc, node)?,
                },
                live,
                has_conflicts,
                cursor: Hlc::from_i64(cursor),
            })
        })
        .transpose()
    }

    fn put_after(&mut self, r: &Record, previous: Option<Hlc>) -> Result<()> {
        let value = match &r.value {
            Value::Deleted => None,
            v => Some(serde_json::to_string(v).map_err(|e| Error::Internal(e.to_string()))?),
        };
        self.put_row(r, value, previous)
    }

    fn put_incoming(&mut self, r: Record, previous: Option<Hlc>, index: usize) -> Result<()> {
        match self.encoded_values.get_mut(index).and_then(Option::take) {
            Some(value) => self.put_row(&r, Some(value), previous)?,
            None => self.put_after(&r, previous)?,
        }
        self.retired.push(r);
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
            "SELECT id FROM heads WHERE collection = ?1 AND kind = 'd' AND live = 1",
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
        let old_layout: Option<String> = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let has_heads = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'heads'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        // Layout upgrades and the schema in one transaction: a store is upgraded whole or
        // not at all.
        let mut setup = String::from("BEGIN IMMEDIATE;");
        if old_layout
            .as_ref()
            .is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID"))
        {
            setup.push_str(MIGRATE_WITHOUT_ROWID);
        }
        setup.push_str(SCHEMA);
        if old_layout.is_some() && !has_heads {
            setup.push_str(MIGRATE_TO_HEADS);
        }
        setup.push_str("COMMIT;");
        conn.execute_batch(&setup)?;
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
        let checkpointer = Checkpointer::start(&path)?;
        let checkpoint = checkpointer.shared.clone();
        let clock = Arc::new(clock);
        let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
        let thread = {
            let clock = clock.clone();
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || writer_loop(conn, rx, node, clock, checkpointer))
                .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
                read_slots: tokio::sync::Semaphore::new(MAX_READERS),
                path,
                node,
                incarnation,
                clock,
                checkpoint,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Deletes every superseded row now, in one transaction (the writer otherwise does it
    /// in chunks when idle); the number deleted.
    pub async fn compact(&self) -> Result<usize> {
        self.write_job(true, |t, _| {
            let n = compact_superseded(t.tx, i64::MAX)?;
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
        self.write_job(false, f).await
    }

    /// [`SqliteStore::write`]; `alone` asks for a transaction of its own (large batches).
    async fn write_job<T: Send + 'static>(
        &self,
        alone: bool,
        f: impl FnOnce(&mut SqlTxn, &Ctx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<Result<T>>();
        let slot = Arc::new(Mutex::new(None::<Result<T>>));
        let ran = slot.clone();
        let job = WriteJob {
            run: Box::new(move |t, ctx| {
                let r = f(t, ctx);
                let ok = r.is_ok();
                *ran.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                ok
            }),
            answer: Box::new(move |committed| {
                let result = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                let _ = answer_tx.send(match (result, committed) {
                    // The write's own error first: its changes were rolled back anyway.
                    (Some(Err(e)), _) => Err(e),
                    (Some(Ok(_)), Err(e)) | (None, Err(e)) => Err(e),
                    (Some(Ok(v)), Ok(())) => Ok(v),
                    (None, Ok(())) => Err(Error::Internal("a store write did not complete".into())),
                });
            }),
            alone,
        };
        let sender = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::Internal("the store is closed".into()))?;
        sender
            .send(job)
            .map_err(|_| Error::Internal("the store's writer thread has stopped".into()))?;
        answer_rx
            .await
            .map_err(|_| Error::Internal("a store write was dropped unanswered".into()))?
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
        mut out: PageWriter,
    ) -> Result<(PageWriter, PageInfo)> {
        let filter = filter.clone();
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE cursor > ?1 AND {NOT_SUPERSEDED}
                 ORDER BY cursor LIMIT ?2"
            ))?;
            let mut rows = stmt.query(params![since.as_i64(), (limit + 1) as i64])?;
            // Changes are written into a small buffer that goes to `out` (and its compressor)
            // whenever it fills, so a page is never held uncompressed as a whole.
            let mut buf = Vec::with_capacity(CHUNK + 8 * 1024);
            buf.push(b'[');
            let (mut read, mut count, mut last) = (0usize, 0usize, None);
            let mut has_more = false;
            while let Some(row) = rows.next()? {
                if read == limit {
                    has_more = true;
                    break;
                }
                read += 1;
                last = Some(Hlc::from_i64(row.get(8)?));
                let mark = buf.len();
                if count > 0 {
                    buf.push(b',');
                }
                if write_change_json(row, &filter, &mut buf)? {
                    count += 1;
                    if buf.len() >= CHUNK {
                        out.write(&buf)?;
                        buf.clear();
                    }
                } else {
                    buf.truncate(mark);
                }
            }
            buf.push(b']');
            out.write(&buf)?;
            let watermark = match last {
                Some(c) => c,
                None => head_of(tx)?,
            };
            Ok((
                out,
                PageInfo {
                    count,
                    watermark,
                    has_more,
                },
            ))
        })
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
        let PreparedChanges { changes, encoded } = batch;
        let (report, retired) = self
            .write_job(alone, move |t, c| {
                t.encoded_values = encoded;
                let report = engine::apply(t, c, changes, strategy, mode, checkpoint);
                t.encoded_values = Vec::new();
                Ok((report?, std::mem::take(&mut t.retired)))
            })
            .await?;
        drop(retired);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::ManualClock;
    use crate::model::EmbeddingSettings;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn clock(ms: u64) -> HlcClock {
        HlcClock::new(Arc::new(ManualClock::new(ms)), 500)
    }

    fn doc(id: &str, content: &str) -> Document {
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

    /// The copied-through JSON page is byte for byte what serde writes for the decoded page,
    /// for every kind of record and every filter.
    #[test]
    fn json_pages_equal_the_decoded_pages() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let a = SqliteStore::open(dir.path().join("a.db"), Some(1), clock(1_000_000)).unwrap();
            let b = SqliteStore::open(dir.path().join("b.db"), Some(2), clock(1_000_000)).unwrap();
            for s in [&a, &b] {
                s.put_collection("c", CollectionSettings::default())
                    .await
                    .unwrap();
            }
            let mut settings = CollectionSettings::default();
            settings.search.top_k = 9;
            settings.embedding = EmbeddingSettings {
                model: Some("m\u{e9}".into()),
                dimensions: Some(2),
            };
            a.put_collection("c", settings.clone()).await.unwrap();
            a.put_collection("gone", CollectionSettings::default())
                .await
                .unwrap();
            a.delete_collection("gone").await.unwrap();
            a.put_document("c", doc("d1", "one")).await.unwrap();
            a.put_document("c", doc("d1", "one again")).await.unwrap();
            let mut e = doc("d/2", "tab\there \u{1f600}");
            e.id = "d\"2".into();
            e.embedding = Some(vec![0.5, -1.25]);
            a.put_document("c", e).await.unwrap();
            a.put_document("c", doc("d3", "three")).await.unwrap();
            a.delete_document("c", "d3").await.unwrap();
            // Concurrent writes on b: a conflict record (conflicts column) and b-only history.
            b.put_document("c", doc("d1", "b's version")).await.unwrap();
            b.put_document("c", doc("only-b", "b")).await.unwrap();
            let from_b = b
                .changes_since(Hlc::ZERO, 100, &ChangeFilter::default())
                .await
                .unwrap()
                .changes;
            a.apply_changes(
                from_b,
                ConflictStrategy::LastWriterWins,
                ApplyMode::AllOrNothing,
                None,
            )
            .await
            .unwrap();
            let filters = [
                ChangeFilter::default(),
                ChangeFilter {
                    collections: vec!["gone".into()],
                    ..Default::default()
                },
                ChangeFilter {
                    exclude_collections: vec!["gone".into()],
                    ..Default::default()
                },
                ChangeFilter {
                    exclude_origin: Some(NodeId(2)),
                    ..Default::default()
                },
                ChangeFilter {
                    exclude_origin: Some(NodeId(1)),
                    ..Default::default()
                },
            ];
            let mut ops = std::collections::BTreeSet::new();
            for filter in &filters {
                for limit in [1, 2, 3, 100] {
                    let mut since = Hlc::ZERO;
                    loop {
                        let page = a.changes_since(since, limit, filter).await.unwrap();
                        let (out, info) = a
                            .write_changes(since, limit, filter, PageWriter::plain())
                            .await
                            .unwrap();
                        for c in &page.changes {
                            ops.insert(serde_json::to_value(c).unwrap()["op"].to_string());
                        }
                        assert_eq!(info.count, page.changes.len());
                        assert_eq!(info.watermark, page.watermark);
                        assert_eq!(info.has_more, page.has_more);
                        assert_eq!(
                            String::from_utf8(out.finish().unwrap()).unwrap(),
                            serde_json::to_string(&page.changes).unwrap()
                        );
                        let (out, _) = a
                            .write_changes(since, limit, filter, PageWriter::zstd(1).unwrap())
                            .await
                            .unwrap();
                        let json = zstd::decode_all(&out.finish().unwrap()[..]).unwrap();
                        let decoded: Vec<Change> = serde_json::from_slice(&json).unwrap();
                        assert_eq!(decoded, page.changes);
                        since = page.watermark;
                        if !page.has_more {
                            break;
                        }
                    }
                }
            }
            assert_eq!(ops.len(), 5, "every op was covered: {ops:?}");
            let conflicted = a
                .changes_since(Hlc::ZERO, 100, &ChangeFilter::default())
                .await
                .unwrap()
                .changes
                .into_iter()
                .filter(|c| !c.conflicts.is_empty())
                .count();
            assert!(conflicted > 0, "a record with conflicts was covered");
        });
    }

    /// Concurrent writes share commits; a failing write rolls back only itself, every
    /// acknowledged write is there after reopening, and every refused one is not.
    #[test]
    fn group_commit_isolates_failures_and_keeps_acknowledged_writes() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("g.db");
            let store = SqliteStore::open(&path, Some(1), clock(3_000_000)).unwrap();
            store
                .put_collection("c", CollectionSettings::default())
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for i in 0..200 {
                let s = store.clone();
                tasks.push(tokio::spawn(async move {
                    // Every third write goes to a collection that does not exist.
                    let collection = if i % 3 == 0 { "missing" } else { "c" };
                    s.put_document(collection, doc(&format!("d{i}"), "x"))
                        .await
                        .is_ok()
                }));
            }
            let mut ok = 0;
            for (i, t) in tasks.into_iter().enumerate() {
                let accepted = t.await.unwrap();
                assert_eq!(accepted, i % 3 != 0, "write {i}");
                ok += usize::from(accepted);
            }
            drop(store);
            let store = SqliteStore::open(&path, Some(1), clock(3_000_000)).unwrap();
            assert_eq!(store.stats().await.unwrap().documents, ok as u64);
            let page = store
                .changes_since(Hlc::ZERO, 1000, &ChangeFilter::default())
                .await
                .unwrap();
            let cursors: Vec<Hlc> = page.changes.iter().map(|c| c.cursor).collect();
            assert!(cursors.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(page.changes.len(), ok + 1);
        });
    }

    /// The writer's key lookups and head updates are planned once: a bound value that can
    /// decide whether a partial index applies makes SQLite prepare a join again on every
    /// execution (as the bound kind did in `current_by_key_sql`: 5 lookups, 5 re-prepares).
    #[test]
    fn key_statements_are_not_prepared_again() {
        use rusqlite::StatementStatus::RePrepare;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        rt().block_on(async {
            let store = SqliteStore::open(&path, Some(1), clock(2_000_000)).unwrap();
            store
                .put_collection("c", CollectionSettings::default())
                .await
                .unwrap();
        });
        let conn = open_connection(&path, false).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        let ctx_clock = clock(3_000_000);
        let ctx = Ctx {
            node: NodeId(1),
            clock: &ctx_clock,
        };
        let mut t = SqlTxn::new(&tx);
        for round in 0..3 {
            for i in 0..5 {
                engine::put_document(
                    &mut t,
                    &ctx,
                    "c",
                    doc(&format!("d{i}"), &format!("v{round}")),
                )
                .unwrap();
                t.get_head(&RecordKey::collection("c")).unwrap();
            }
        }
        // Hands the statements it held back to the connection's cache.
        drop(t);
        for kind in [Kind::Document, Kind::Collection] {
            for sql in [
                current_by_key_sql(kind),
                head_by_key_sql(kind),
                head_update_sql(kind),
            ] {
                let stmt = tx.prepare_cached(&sql).unwrap();
                assert_eq!(stmt.get_status(RePrepare), 0, "prepared again: {sql}");
            }
        }
        // The statements were used (and so would have been prepared again, if at all).
        assert_eq!(
            tx.prepare_cached(&head_update_sql(Kind::Document))
                .unwrap()
                .get_status(rusqlite::StatementStatus::Run),
            10
        );
    }

    /// A version vector that is just the version's own write is stored as an empty column;
    /// any other (several nodes, or a later entry for the writer) as JSON. Either way every
    /// reader (records, heads, the JSON page) gives back exactly the vector that was written.
    #[test]
    fn version_vectors_are_stored_compactly_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (n1, n2) = (NodeId(1), NodeId(2));
        let (h1, h2, h3) = (
            Hlc::new(1_000_000, 0),
            Hlc::new(1_000_100, 0),
            Hlc::new(1_000_200, 3),
        );
        let vv = |entries: &[(NodeId, Hlc)]| VersionVector(entries.iter().copied().collect());
        let cases = [
            ("own", h1, n1, vv(&[(n1, h1)]), true),
            ("merged", h2, n2, vv(&[(n1, h1), (n2, h2)]), false),
            ("ahead", h1, n1, vv(&[(n1, h3)]), false),
        ];
        let changes: Vec<Change> = cases
            .iter()
            .map(|(id, hlc, node, vv, _)| Change {
                cursor: *hlc,
                version: Version {
                    hlc: *hlc,
                    node: *node,
                    vv: vv.clone(),
                },
                body: ChangeBody::DocumentInsert {
                    collection: "c".into(),
                    document: doc(id, id),
                },
                conflicts: Vec::new(),
            })
            .collect();
        rt().block_on(async {
            let store = SqliteStore::open(&path, Some(9), clock(1_000_300)).unwrap();
            store
                .put_collection("c", CollectionSettings::default())
                .await
                .unwrap();
            store
                .apply_changes(
                    changes,
                    ConflictStrategy::LastWriterWins,
                    ApplyMode::AllOrNothing,
                    None,
                )
                .await
                .unwrap();
            let (out, _) = store
                .write_changes(
                    Hlc::ZERO,
                    100,
                    &ChangeFilter::default(),
                    PageWriter::plain(),
                )
                .await
                .unwrap();
            let page: Vec<Change> = serde_json::from_slice(&out.finish().unwrap()).unwrap();
            for (id, _, _, vv, _) in &cases {
                let key = RecordKey::document("c", id);
                let record = store.get_record(&key).await.unwrap().unwrap();
                assert_eq!(&record.version.vv, vv, "{id}");
                let change = page.iter().find(|c| c.body.key() == key).unwrap();
                assert_eq!(&change.version.vv, vv, "{id} in a page");
            }
        });
        let conn = open_connection(&path, false).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for (id, _, _, vv, compact) in &cases {
            for table in ["records", "heads"] {
                let stored: String = tx
                    .query_row(
                        &format!("SELECT vv FROM {table} WHERE kind = 'd' AND id = ?1"),
                        [id],
                        |r| r.get(0),
                    )
                    .unwrap();
                let expected = if *compact {
                    String::new()
                } else {
                    serde_json::to_string(vv).unwrap()
                };
                assert_eq!(stored, expected, "{id} in {table}");
            }
        }
        let mut t = SqlTxn::new(&tx);
        for (id, _, _, vv, _) in &cases {
            let head = t.get_head(&RecordKey::document("c", id)).unwrap().unwrap();
            assert_eq!(&head.version.vv, vv, "{id}'s head");
        }
    }

    /// A store written before `heads` existed (one row per record in `records`, with a
    /// unique key index) opens with its records intact, and takes updates.
    #[test]
    fn layout_without_heads_is_migrated() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let src = SqliteStore::open(dir.path().join("src.db"), Some(5), clock(2_000_000))
                .unwrap();
            src.put_collection("c", CollectionSettings::default())
                .await
                .unwrap();
            src.put_document("c", doc("x", "kept")).await.unwrap();
            src.put_document("c", doc("y", "gone")).await.unwrap();
            src.delete_document("c", "y").await.unwrap();
            src.compact().await.unwrap();
            let expected = src
                .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
                .await
                .unwrap();
            assert_eq!(expected.changes.len(), 3);
            let path = dir.path().join("old.db");
            {
                let conn = Connection::open(&path).unwrap();
                conn.execute_batch(&format!(
                    "PRAGMA journal_mode=WAL;
                     CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                     CREATE TABLE records (
                        cursor INTEGER PRIMARY KEY, collection TEXT NOT NULL,
                        kind TEXT NOT NULL, id TEXT NOT NULL, hlc INTEGER NOT NULL,
                        node INTEGER NOT NULL, vv TEXT NOT NULL, value TEXT, conflicts TEXT,
                        existed INTEGER NOT NULL);
                     CREATE UNIQUE INDEX records_key ON records (collection, kind, id);
                     CREATE INDEX records_tombstones ON records (hlc) WHERE value IS NULL;
                     INSERT INTO meta VALUES ('node_id', '0005'), ('incarnation', 'abcd');
                     ATTACH DATABASE '{}' AS src;
                     INSERT INTO records ({RECORD_COLUMNS}) SELECT {RECORD_COLUMNS} FROM src.records;",
                    dir.path().join("src.db").display()
                ))
                .unwrap();
            }
            let store = SqliteStore::open(&path, None, clock(2_000_000)).unwrap();
            let page = store
                .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
                .await
                .unwrap();
            assert_eq!(page, expected);
            let stats = store.stats().await.unwrap();
            assert_eq!((stats.documents, stats.tombstones), (1, 1));
            let x = store
                .get_record(&RecordKey::document("c", "x"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(x.value, Value::Document { document: doc("x", "kept") });
            store.put_document("c", doc("x", "changed")).await.unwrap();
            store.put_document("c", doc("y", "back")).await.unwrap();
            let listed = store.list_documents("c", None, 10).await.unwrap();
            let contents: Vec<_> = listed
                .documents
                .iter()
                .map(|r| match &r.value {
                    Value::Document { document } => document.content.clone(),
                    other => panic!("not a document: {other:?}"),
                })
                .collect();
            assert_eq!(contents, ["changed", "back"]);
            assert_eq!(store.stats().await.unwrap().superseded, 2);
            let old_index: Option<String> = Connection::open(&path)
                .unwrap()
                .query_row(
                    "SELECT name FROM sqlite_master WHERE name = 'records_key'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .unwrap();
            assert_eq!(old_index, None, "the old unique key index is dropped");
        });
    }

    /// A store written with the old `WITHOUT ROWID` layout opens with its records intact.
    #[test]
    fn old_layout_is_migrated() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            {
                let conn = Connection::open(&path).unwrap();
                conn.execute_batch(
                    "PRAGMA journal_mode=WAL;
                     CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                     CREATE TABLE records (
                        collection TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
                        hlc INTEGER NOT NULL, node INTEGER NOT NULL, vv TEXT NOT NULL,
                        value TEXT, conflicts TEXT, cursor INTEGER NOT NULL UNIQUE,
                        existed INTEGER NOT NULL, PRIMARY KEY (collection, kind, id)
                     ) WITHOUT ROWID;
                     INSERT INTO meta VALUES ('node_id', '0005'), ('incarnation', 'abcd');",
                )
                .unwrap();
            }
            // Records written by the current code, copied into the old table.
            let src = SqliteStore::open(dir.path().join("src.db"), Some(5), clock(2_000_000))
                .unwrap();
            src.put_collection("c", CollectionSettings::default())
                .await
                .unwrap();
            src.put_document("c", doc("x", "kept")).await.unwrap();
            let expected = src
                .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
                .await
                .unwrap();
            {
                let conn = Connection::open(&path).unwrap();
                conn.execute(
                    "ATTACH DATABASE ?1 AS src",
                    [dir.path().join("src.db").to_str().unwrap()],
                )
                .unwrap();
                conn.execute_batch(&format!(
                    "INSERT INTO records ({RECORD_COLUMNS}) SELECT {RECORD_COLUMNS} FROM src.records"
                ))
                .unwrap();
            }
            let store = SqliteStore::open(&path, None, clock(2_000_000)).unwrap();
            assert_eq!(store.node_id(), NodeId(5));
            assert_eq!(store.incarnation(), "abcd");
            let page = store
                .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
                .await
                .unwrap();
            assert_eq!(page, expected);
            let layout: String = Connection::open(&path)
                .unwrap()
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE name = 'records'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(!layout.to_ascii_uppercase().contains("WITHOUT ROWID"));
            store.put_document("c", doc("y", "new")).await.unwrap();
            assert_eq!(store.stats().await.unwrap().documents, 2);
        });
    }
}
