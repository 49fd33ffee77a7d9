//! The WAL checkpointer: a thread of its own that copies committed WAL frames back into the
//! database file, and the writer's bound on the WAL's size.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::error::{Error, Result};

/// WAL frames (about 64 MiB of 4 KiB pages) after which the writer completes a checkpoint
/// itself between two transactions. Under a continuous stream of writes the background
/// checkpoint never quite catches up with the last commit, and SQLite restarts the WAL from
/// its beginning only once everything in it has been copied back: without this, the WAL
/// would grow for as long as the writes keep coming.
const WAL_FRAMES_LIMIT: i64 = 16_384;

/// Least time between two background checkpoints.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Copies the WAL back into the database file on its own thread and connection (a PASSIVE
/// checkpoint, which never blocks the writer or readers), so that a commit pays only for
/// appending its own frames and syncing them. SQLite's automatic checkpoint would run inside
/// the commit of whichever write crossed the threshold: every few sync pages, a commit took
/// several times longer while it rewrote and synced the database file. Durability is the
/// same: a commit is durable once its WAL frames are synced (`synchronous=FULL`, or the next
/// synced commit for a pull's); the checkpoint syncs the WAL before it copies from it.
pub(super) struct Checkpointer {
    shared: Arc<CheckpointShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
pub(super) struct CheckpointShared {
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
    pub(super) fn pending(&self) -> bool {
        let st = self.state();
        st.commits > 0 || st.behind || st.running
    }
}

impl Checkpointer {
    /// Starts the thread, which checkpoints on `conn`.
    pub(super) fn start(conn: Connection) -> Result<Checkpointer> {
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
    pub(super) fn committed(&self) {
        self.shared.state().commits += 1;
        self.shared.wake.notify_one();
    }

    /// After [`Checkpointer::committed`], once the WAL is large: completes a checkpoint on
    /// the writer's connection, so that the next write starts the WAL over (see
    /// [`WAL_FRAMES_LIMIT`]). The background thread has usually copied nearly everything.
    pub(super) fn bound_wal(&self, writer: &Connection) -> Result<()> {
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

    /// What [`CheckpointShared::pending`] reads, for the store's stats.
    pub(super) fn shared(&self) -> Arc<CheckpointShared> {
        self.shared.clone()
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
