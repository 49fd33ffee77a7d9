//! The measured scenarios: two nodes (load, full sync, incremental sync, compaction), and the
//! five-node mesh healing after a partition.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::api::{
    bulk_write, call, configure, pulled, put_documents, sync_now, wait_compacted, wait_idle,
    wait_round,
};
use crate::corpus::{Loader, COLLECTION};
use crate::debug::{debug_rss, debug_thread_cpu, thread_cpu_snapshot};
use crate::digest::{digest, same_records};
use crate::nodes::Node;
use crate::perf::Perf;
use crate::proxy::{start_proxy, Counter};
use crate::Args;

/// One two-node run's figures.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub ingest_dps: f64,
    pub full_dps: f64,
    pub incr_dps: f64,
    pub full_bytes_per_doc: f64,
    pub incr_bytes_per_doc: f64,
    pub rss_a: f64,
    pub rss_b: f64,
    pub disk_a: f64,
    pub wal_a: f64,
    /// CPU microseconds per document, full sync: (A, B).
    pub full_cpu_us: (f64, f64),
    pub incr_cpu_us: (f64, f64),
    /// B's CPU microseconds per changed document deleting the versions they replaced.
    pub compaction_cpu_us: f64,
    /// Changed documents per second if B's compaction ran within the sync, serially.
    pub incr_with_compaction_dps: f64,
    /// Wall time of the load, the full sync, the incremental sync, and from the end of the
    /// incremental sync until B had compacted.
    pub ingest: Duration,
    pub full: Duration,
    pub incr: Duration,
    pub compaction: Duration,
}

/// One timed sync of B from A (`POST /admin/sync` on B), which must pull `expected`
/// changes: its duration, the bytes the proxy counted both ways, and each node's CPU
/// seconds. `phase` names the perf profiles and the debug output.
async fn timed_sync(
    http: &reqwest::Client,
    a: &Node,
    b: &Node,
    counter: &Counter,
    perf_dir: Option<&Path>,
    phase: &str,
    expected: usize,
) -> Result<(Duration, u64, (f64, f64))> {
    // What the untimed steps before left to do in the background (copying the WAL back
    // into the database file, deleting replaced versions) is theirs, not this sync's.
    wait_idle(http, a).await?;
    wait_idle(http, b).await?;
    let perfs = [
        Perf::start(perf_dir, a, phase)?,
        Perf::start(perf_dir, b, phase)?,
    ];
    let cpu = (a.cpu_seconds(), b.cpu_seconds());
    let threads = thread_cpu_snapshot(&[a, b]);
    let before = counter.total();
    let (elapsed, answer) = sync_now(http, b).await?;
    debug_thread_cpu(phase, expected, &threads, &[a, b]);
    let bytes = counter.total() - before;
    let cpu = (a.cpu_seconds() - cpu.0, b.cpu_seconds() - cpu.1);
    perfs.into_iter().for_each(Perf::stop);
    if pulled(&answer) != expected as u64 {
        bail!(
            "{phase} sync pulled {} changes, expected {expected}",
            pulled(&answer)
        );
    }
    Ok((elapsed, bytes, cpu))
}

/// Run `run` of the two-node scenario, on fresh nodes under `root`.
pub async fn pair_run(
    args: &Args,
    bin: &Path,
    root: &Path,
    http: &reqwest::Client,
    loader: &Loader,
    run: usize,
) -> Result<RunFigures> {
    let n = args.docs;
    let a = Node::start(bin, root, &format!("run{run}-a"), 1, http, args.keep).await?;
    let b = Node::start(bin, root, &format!("run{run}-b"), 2, http, args.keep).await?;
    let (proxy, counter) = start_proxy(a.addr).await?;

    call(
        http,
        reqwest::Method::PUT,
        format!("{}/collections/{COLLECTION}", a.url()),
        Some(json!({})),
    )
    .await?;
    // B pulls from A through the proxy. The config change wakes B's scheduler for one
    // round (which brings the empty collection); the interval keeps it from starting
    // another while we measure, and live delivery is off so that only the timed rounds
    // move data (`--latency` measures live delivery).
    call(
        http,
        reqwest::Method::PUT,
        format!("{}/admin/config", b.url()),
        Some(json!({
            "peers": [{"peer_id": "a", "endpoint": format!("http://{proxy}"), "direction": "pull"}],
            "interval_seconds": 86_400,
            "batch_size": args.batch_size,
            "live": false,
        })),
    )
    .await?;
    wait_round(http, &b, "a").await?;

    // Load (not part of the sync figures; its rate is A's bulk ingest).
    let ingest = bulk_write(http, loader, &a.url(), (0..n).collect(), args.batch_size, 0).await?;

    debug_rss("after load", &[&a, &b]);
    // Full sync.
    let perf_dir = args.perf_dir.as_deref().filter(|_| run == 0);
    let (full, full_bytes, full_cpu) =
        timed_sync(http, &a, &b, &counter, perf_dir, "full", n).await?;
    debug_rss("after full sync", &[&a, &b]);
    let records = same_records(http, &a, &b).await?;
    debug_rss("after verify", &[&a, &b]);
    if records != n as u64 + 1 {
        bail!("expected {} records, found {records}", n + 1);
    }

    // Incremental: every 10th document changes on A.
    let changed: Vec<usize> = (0..n).step_by(10).collect();
    let m = changed.len();
    bulk_write(http, loader, &a.url(), changed, args.batch_size, 1).await?;
    let (incr, incr_bytes, incr_cpu) =
        timed_sync(http, &a, &b, &counter, perf_dir, "incr", m).await?;
    debug_rss("after incremental", &[&a, &b]);
    // The versions the updates replaced are deleted by B's writer once it is idle: the
    // deferred part of the incremental sync's cost, measured as the CPU time of B's store
    // threads (writer and checkpointer) until none are left.
    let (compaction, compaction_cpu) = {
        let (started, cpu) = (Instant::now(), b.store_threads_cpu_seconds());
        wait_compacted(http, &b).await?;
        (started.elapsed(), b.store_threads_cpu_seconds() - cpu)
    };
    same_records(http, &a, &b).await?;
    debug_rss("after verify", &[&a, &b]);

    Ok(RunFigures {
        ingest_dps: n as f64 / ingest.as_secs_f64(),
        full_dps: n as f64 / full.as_secs_f64(),
        incr_dps: m as f64 / incr.as_secs_f64(),
        full_bytes_per_doc: full_bytes as f64 / n as f64,
        incr_bytes_per_doc: incr_bytes as f64 / m as f64,
        rss_a: a.peak_rss()? as f64,
        rss_b: b.peak_rss()? as f64,
        disk_a: a.disk_bytes().0 as f64,
        wal_a: a.disk_bytes().1 as f64,
        full_cpu_us: (full_cpu.0 * 1e6 / n as f64, full_cpu.1 * 1e6 / n as f64),
        incr_cpu_us: (incr_cpu.0 * 1e6 / m as f64, incr_cpu.1 * 1e6 / m as f64),
        compaction_cpu_us: compaction_cpu * 1e6 / m as f64,
        incr_with_compaction_dps: m as f64 / (incr.as_secs_f64() + compaction_cpu),
        ingest,
        full,
        incr,
        compaction,
    })
}

async fn round_all(http: &reqwest::Client, nodes: &[&Node]) -> Result<()> {
    futures::future::try_join_all(nodes.iter().map(|n| sync_now(http, n))).await?;
    Ok(())
}

/// The mesh figure: time and rounds from the heal until all five nodes held the same
/// records, how many, the conflicts kept, and the largest peak RSS.
pub struct MeshFigures {
    pub convergence: Duration,
    pub rounds: usize,
    pub records: u64,
    pub conflicts: u64,
    pub rss_max: f64,
}

/// The five-node mesh: a first round, a partition {n1, n2} | {n3, n4, n5} in which each side
/// writes, then the heal, timed until every node holds the same records.
pub async fn mesh5(
    args: &Args,
    bin: &Path,
    root: &Path,
    http: &reqwest::Client,
    loader: &Loader,
) -> Result<MeshFigures> {
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(
            Node::start(
                bin,
                root,
                &format!("mesh-n{}", i + 1),
                11 + i,
                http,
                args.keep,
            )
            .await?,
        );
    }
    let all: Vec<&Node> = nodes.iter().collect();
    call(
        http,
        reqwest::Method::PUT,
        format!("{}/collections/{COLLECTION}", all[0].url()),
        Some(json!({})),
    )
    .await?;
    for n in &all {
        configure(http, n, &all, args.batch_size).await?;
    }
    round_all(http, &all).await?;
    debug_rss("mesh: after first round", &all);

    // Partition: {n1, n2} | {n3, n4, n5}; each side only syncs within itself.
    let (left, right) = all.split_at(2);
    for n in left {
        configure(http, n, left, args.batch_size).await?;
    }
    for n in right {
        configure(http, n, right, args.batch_size).await?;
    }
    // Each side writes `mesh_docs` documents; a tenth of the ids are written on both sides
    // (concurrent updates that become conflicts after the heal).
    let k = args.mesh_docs;
    let shared = k / 10;
    let ids = |side: &str| -> Vec<String> {
        (0..k)
            .map(|i| {
                if i < shared {
                    format!("shared-{i:06}")
                } else {
                    format!("{side}-{i:06}")
                }
            })
            .collect()
    };
    let (l, r) = futures::join!(
        put_documents(http, loader, left, ids("left"), 10),
        put_documents(http, loader, right, ids("right"), 20)
    );
    l?;
    r?;
    debug_rss("mesh: after writes", &all);
    round_all(http, left).await?;
    round_all(http, right).await?;
    debug_rss("mesh: after side rounds", &all);

    // Heal and time until every node holds the same records.
    let started = Instant::now();
    for n in &all {
        configure(http, n, &all, args.batch_size).await?;
    }
    let mut rounds = 0;
    let mut converged_at;
    loop {
        round_all(http, &all).await?;
        rounds += 1;
        converged_at = started.elapsed();
        let digests =
            futures::future::try_join_all(all.iter().map(|n| digest(http, n.url()))).await?;
        if digests.iter().all(|d| *d == digests[0]) {
            break;
        }
        if rounds >= 10 {
            bail!("the mesh did not converge in 10 rounds");
        }
    }
    debug_rss("mesh: converged", &all);
    let expected = 1 + 2 * k as u64 - shared as u64;
    let records = digest(http, all[0].url()).await?.0;
    if records != expected {
        bail!("mesh holds {records} records, expected {expected}");
    }
    let status = call(
        http,
        reqwest::Method::GET,
        format!("{}/admin/status", all[0].url()),
        None,
    )
    .await?;
    let mut rss_max: f64 = 0.0;
    for n in &all {
        rss_max = rss_max.max(n.peak_rss()? as f64);
    }
    Ok(MeshFigures {
        convergence: converged_at,
        rounds,
        records,
        conflicts: status["conflicts"].as_u64().unwrap_or(0),
        rss_max,
    })
}
