//! `--store`: the puller's store alone, in this process. Pages of changes as a peer would
//! send them go straight to `SqliteStore::apply_changes` (no HTTP, no decoding), so the
//! figures are the writer's own cost per change: the part of a sync that one thread has to
//! do in order, and so the bound on how fast a node can apply a peer's log.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rag_sync::config::ConflictStrategy;
use rag_sync::hlc::HlcClock;
use rag_sync::model::{Change, CollectionSettings, NodeId};
use rag_sync::store::{
    ApplyMode, Checkpoint, CheckpointDirection, CheckpointKey, SqliteStore, Store,
};

use crate::corpus::{Loader, COLLECTION};
use crate::perf::Perf;
use crate::procfs::threads_cpu_seconds;
use crate::report::line;
use crate::Args;

/// One run's figures, in µs per change: wall time (the applying task waits for each page,
/// as the puller does, so this is the writer's time plus the encoding beside it), and the
/// CPU time of the writer and of the checkpointer, which contention on the machine moves
/// much less.
struct StoreFigures {
    full_us: f64,
    incremental_us: f64,
    compaction_us: f64,
    full_cpu: (f64, f64),
    incremental_cpu: (f64, f64),
}

/// CPU seconds so far of this process's store writer and checkpointer threads.
fn store_cpu() -> (f64, f64) {
    let me = std::process::id();
    (
        threads_cpu_seconds(me, "sqlite-writer"),
        threads_cpu_seconds(me, "sqlite-checkpoi"),
    )
}

/// Applies `ids` (at `revision`) in pages of `batch`, each with the puller's checkpoint;
/// returns the time taken.
async fn apply_pages(
    store: &SqliteStore,
    loader: &Loader,
    ids: &[usize],
    batch: usize,
    revision: u64,
) -> Result<Duration> {
    let pages: Vec<Vec<Change>> = ids
        .chunks(batch)
        .map(|chunk| loader.changes(chunk.iter().copied(), revision))
        .collect();
    let started = Instant::now();
    for page in pages {
        let n = page.len();
        let cursor = page.last().map(|c| c.cursor).unwrap_or_default();
        let checkpoint = Checkpoint {
            key: CheckpointKey {
                peer: NodeId(1),
                direction: CheckpointDirection::Pull,
                scope: "*".into(),
            },
            incarnation: "bench".into(),
            cursor,
            updated_ms: 0,
        };
        let report = store
            .apply_changes(
                page,
                ConflictStrategy::LastWriterWins,
                ApplyMode::Prefix,
                Some(checkpoint),
            )
            .await?;
        if report.applied != n {
            bail!("applied {} of {n} changes", report.applied);
        }
    }
    Ok(started.elapsed())
}

async fn store_run(
    dir: &std::path::Path,
    loader: &Loader,
    args: &Args,
    run: usize,
) -> Result<StoreFigures> {
    let (docs, batch) = (args.docs, args.batch_size);
    let perf_dir = args.perf_dir.as_deref().filter(|_| run == 0);
    let store = SqliteStore::open(dir.join("rag.db"), Some(2), HlcClock::system())?;
    store
        .put_collection(COLLECTION, CollectionSettings::default())
        .await?;
    let all: Vec<usize> = (0..docs).collect();
    let cpu0 = store_cpu();
    let full = apply_pages(&store, loader, &all, batch, 0).await?;
    let cpu1 = store_cpu();
    let changed: Vec<usize> = (0..docs).step_by(10).collect();
    let perf = Perf::attach(perf_dir, Some(std::process::id()), "store-incr")?;
    let incremental = apply_pages(&store, loader, &changed, batch, 1).await?;
    perf.stop();
    let cpu2 = store_cpu();
    let started = Instant::now();
    while store.compact().await? > 0 {}
    let compaction = started.elapsed();
    let per = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    let cpu = |a: (f64, f64), b: (f64, f64), n: usize| {
        ((b.0 - a.0) * 1e6 / n as f64, (b.1 - a.1) * 1e6 / n as f64)
    };
    Ok(StoreFigures {
        full_us: per(full, docs),
        incremental_us: per(incremental, changed.len()),
        compaction_us: per(compaction, changed.len()),
        full_cpu: cpu(cpu0, cpu1, docs),
        incremental_cpu: cpu(cpu1, cpu2, changed.len()),
    })
}

/// Runs `runs` times on fresh stores under `root` and prints one line per figure.
pub async fn store_bench(root: &std::path::Path, loader: &Loader, args: &Args) -> Result<()> {
    let mut figures = Vec::new();
    for run in 0..args.runs {
        let dir = root.join(format!("store{run}"));
        std::fs::create_dir_all(&dir)?;
        let f = store_run(&dir, loader, args, run).await?;
        println!(
            "  run {}: apply µs/change: full {:.1} (CPU: writer {:.1}, checkpointer {:.1}), incremental {:.1} (CPU: writer {:.1}, checkpointer {:.1}), then compaction {:.1}",
            run + 1,
            f.full_us,
            f.full_cpu.0,
            f.full_cpu.1,
            f.incremental_us,
            f.incremental_cpu.0,
            f.incremental_cpu.1,
            f.compaction_us
        );
        std::fs::remove_dir_all(&dir)?;
        figures.push(f);
    }
    let col = |f: fn(&StoreFigures) -> f64| figures.iter().map(f).collect::<Vec<_>>();
    for (name, values) in [
        ("store apply, full (new docs)", col(|f| f.full_us)),
        ("  writer CPU", col(|f| f.full_cpu.0)),
        ("store apply, incremental", col(|f| f.incremental_us)),
        ("  writer CPU", col(|f| f.incremental_cpu.0)),
        ("  checkpointer CPU", col(|f| f.incremental_cpu.1)),
        ("store compaction of replaced", col(|f| f.compaction_us)),
    ] {
        println!("{}", line(name, "µs/change", values, 1.0, 1).1);
    }
    Ok(())
}
