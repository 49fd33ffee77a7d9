//! The writer thread, which owns the one write connection: group commit of queued writes,
//! and compaction of superseded rows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::checkpointer::Checkpointer;
use super::txn::SqlTxn;
use crate::error::{Error, Result};
use crate::hlc::HlcClock;
use crate::model::NodeId;
use crate::store::engine::Ctx;

/// Free space a full disk must regain before the store is ready for writes again.
pub const SPACE_TO_RESUME: u64 = 1 << 20;

/// Bytes free for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is written by statvfs before use.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // Both are u64 on 64-bit Linux but not on every target.
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The writer thread's queue. Dropping it closes the queue; the thread finishes what was
/// queued and is waited for.
pub(super) struct Writer {
    jobs: Mutex<Option<Sender<WriteJob>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The directory the store lives in (named when its disk is full).
    dir: PathBuf,
    /// The last write failed for want of space (cleared by a write that succeeds, or by
    /// [`Writer::space_returned`]).
    full: AtomicBool,
}

impl Writer {
    /// Starts the thread on the write connection `conn`.
    pub(super) fn start(
        conn: Connection,
        node: NodeId,
        clock: Arc<HlcClock>,
        checkpointer: Checkpointer,
        dir: PathBuf,
    ) -> Result<Writer> {
        let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, node, clock, checkpointer))
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            dir,
            full: AtomicBool::new(false),
        })
    }

    /// Why writes fail now, if they do: the disk is full and has no more room than
    /// [`SPACE_TO_RESUME`]. Once it has, the next write is tried again.
    pub(super) fn failing(&self) -> Option<String> {
        if !self.full.load(Ordering::Relaxed) {
            return None;
        }
        match free_bytes(&self.dir) {
            Some(free) if free >= SPACE_TO_RESUME => {
                self.full.store(false, Ordering::Relaxed);
                None
            }
            free => Some(format!(
                "writes fail: no space left in the data directory {} ({} bytes free)",
                self.dir.display(),
                free.map_or("unknown".into(), |f| f.to_string())
            )),
        }
    }

    /// Runs `f` in a write transaction on the writer thread; its changes are kept only if it
    /// returns `Ok`, and it is answered once they are committed. `alone` asks for a
    /// transaction of its own (large batches). A `synced` write is answered once its commit
    /// is on disk (the WAL fsynced, `synchronous=FULL`); an unsynced one once it is in the
    /// WAL (`synchronous=NORMAL`: it survives the process being killed, and a power loss
    /// can take it only together with every commit after it). Only changes pulled with their
    /// checkpoint in the same transaction are unsynced: losing them loses the checkpoint
    /// too, so they are pulled again.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        alone: bool,
        synced: bool,
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
            synced,
        };
        let sender = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::Internal("the store is closed".into()))?;
        sender
            .send(job)
            .map_err(|_| Error::Internal("the store's writer thread has stopped".into()))?;
        let result = answer_rx
            .await
            .map_err(|_| Error::Internal("a store write was dropped unanswered".into()))?;
        match result {
            Err(Error::InsufficientStorage(m)) => {
                self.full.store(true, Ordering::Relaxed);
                Err(Error::InsufficientStorage(format!(
                    "no space left in the data directory {}: {m}; nothing of this write was kept",
                    self.dir.display()
                )))
            }
            Ok(v) => {
                self.full.store(false, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the writer thread once it has finished what was queued.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

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
    /// Answered only once its commit is fsynced (see [`Writer::run`]).
    synced: bool,
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
    // The connection's `synchronous` setting: FULL when it was opened.
    let mut synced = true;
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
        // A group is fsynced if any of its writes must be; an fsync of the WAL also makes
        // every unsynced commit before it durable, so what a power loss can take is always
        // the newest commits, never one from between durable ones.
        let sync = batch.iter().any(|j| j.synced);
        let started = std::time::Instant::now();
        let mut answers = Vec::with_capacity(batch.len());
        let outcome = match set_synchronous(&conn, &mut synced, sync) {
            // Never commit a write that must be fsynced without it; left at FULL, an
            // unsynced group is only slower.
            Err(e) if sync => {
                answers.extend(batch.into_iter().map(|j| j.answer));
                Err(e.into())
            }
            _ => run_group(&mut conn, batch, node, &clock, &mut answers),
        };
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
                let e = match e {
                    Error::InsufficientStorage(m) => Error::InsufficientStorage(m),
                    e => Error::Storage(format!("write transaction failed: {e}")),
                };
                for a in answers {
                    a(Err(e.clone()));
                }
            }
        }
    }
}

/// Sets the connection's `synchronous` to FULL (`sync`) or NORMAL unless it is so already
/// (`current`).
fn set_synchronous(conn: &Connection, current: &mut bool, sync: bool) -> rusqlite::Result<()> {
    if *current == sync {
        return Ok(());
    }
    let mode = if sync { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", mode)
        .inspect(|()| *current = sync)
        .inspect_err(|e| tracing::warn!(error = %e, mode, "cannot set synchronous"))
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
pub(super) fn compact_superseded(tx: &Connection, limit: i64) -> Result<usize> {
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

#[cfg(test)]
mod tests {
    use crate::hlc::Hlc;
    use crate::model::CollectionSettings;
    use crate::store::sqlite::testing::{clock, doc};
    use crate::store::{ChangeFilter, SqliteStore, Store};

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

    /// A write that must be fsynced never commits in a transaction that is not, whatever
    /// ran before it; an unsynced one alone commits without the fsync.
    #[test]
    fn synced_writes_always_commit_with_full_sync() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store =
                SqliteStore::open(dir.path().join("s.db"), Some(1), clock(3_000_000)).unwrap();
            let writer = &store.inner.writer;
            let mode = |synced| {
                writer.run(false, synced, |t, _| {
                    Ok(t.tx.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))?)
                })
            };
            // 2 is FULL, 1 NORMAL.
            for (synced, want) in [(true, 2), (false, 1), (false, 1), (true, 2), (false, 1)] {
                assert_eq!(mode(synced).await.unwrap(), want, "synced {synced}");
            }
        });
    }
}
