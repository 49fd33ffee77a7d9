//! `rag-bench`: sync throughput, bytes on the wire and memory of real `rag-node` processes.
//!
//! Per run: starts two release `rag-node`s (A, B) on loopback with fresh data directories,
//! bulk-loads N documents into A through `POST /sync/changes` (the node's bulk write path;
//! its rate is A's own bulk-ingest figure), points B at A through a byte-counting TCP proxy
//! in this process (`PUT /admin/config`, direction pull), times a full sync
//! (`POST /admin/sync` on B), checks that B holds exactly A's records (count and an
//! order-independent SHA-256 digest of every record's version and value), updates every
//! 10th document on A, times an incremental sync, checks again, and reads each node's peak
//! RSS (`VmHWM`). Prints min / median / max over the runs, one line per figure.
//!
//! `--mesh5` adds a five-node mesh figure: convergence time after a partition in which
//! each side wrote `--mesh-docs` documents (with some ids written on both sides, which
//! become conflicts).
//!
//! `--latency` measures live delivery instead (see `latency`): write-to-visible-everywhere
//! latency in 5- and 16-node meshes and a hub with 15 spokes, the idle mesh's CPU, and a
//! sustained write stream; `make bench-latency`.
//!
//! Run it with `make bench` (release build) or
//! `target/release/rag-bench --docs 1000000 --runs 1`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

use corpus::Loader;

mod api;
mod corpus;
mod debug;
mod digest;
mod feeds;
mod latency;
mod nodes;
mod perf;
mod procfs;
mod proxy;
mod report;
mod scenarios;
mod store;

/// Benchmark of rag-sync replication between real rag-node processes.
#[derive(Parser, Debug, Clone)]
#[command(about)]
struct Args {
    /// Documents loaded into node A.
    #[arg(long, default_value_t = 100_000)]
    docs: usize,
    /// Approximate size of one document as JSON (id, collection, text, metadata), bytes.
    #[arg(long, default_value_t = 1024)]
    doc_size: usize,
    /// Sync page size (`batch_size` in B's config) and bulk-load batch size.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Repetitions (fresh nodes each); figures are min / median / max over them.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also measure the five-node mesh: convergence after a partition.
    #[arg(long)]
    mesh5: bool,
    /// Skip the two-node figures (with `--mesh5`: only the mesh).
    #[arg(long)]
    no_pair: bool,
    /// Documents each side of the mesh partition writes.
    #[arg(long, default_value_t = 10_000)]
    mesh_docs: usize,
    /// The rag-node binary (default: `rag-node` next to this binary).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Keep the data directories and node logs (printed at the end).
    #[arg(long)]
    keep: bool,
    /// Record `perf` profiles of both nodes during the first full and incremental sync
    /// into this directory (profiling aid).
    #[arg(long)]
    perf_dir: Option<PathBuf>,
    /// Only the puller's store, in this process: pages applied straight to a SQLite store
    /// (no HTTP, no second node); prints the writer's µs per change.
    #[arg(long)]
    store: bool,
    /// Only the live-delivery figures: write-to-all latency (5-node and 16-node mesh, hub
    /// with 15 spokes), idle CPU of the 16-node mesh, a sustained write stream.
    #[arg(long)]
    latency: bool,
    /// Writes, one at a time, of each `--latency` write-to-all figure.
    #[arg(long, default_value_t = 200)]
    latency_writes: usize,
    /// With `--latency`: only the 5-node mesh (a quick run).
    #[arg(long)]
    latency_only_5: bool,
    /// With `--latency`: only an N-node sparse graph instead (each node pulls from its ring
    /// predecessor and two chords, as the operator's `Sparse` with fanout 3 does).
    #[arg(long, default_value_t = 0)]
    latency_sparse: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.docs == 0 || args.runs == 0 || args.batch_size == 0 || args.latency_writes == 0 {
        bail!("--docs, --runs, --batch-size and --latency-writes must be positive");
    }
    if args.batch_size > rag_sync::wire::MAX_PAGE {
        bail!("--batch-size is at most {}", rag_sync::wire::MAX_PAGE);
    }
    let root = std::env::temp_dir().join(format!("rag-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    if args.store {
        let loader = Loader::new(args.doc_size);
        println!(
            "rag-bench --store: {} docs of ~{} B, batch {}, {} run(s), store under {}",
            args.docs,
            args.doc_size,
            args.batch_size,
            args.runs,
            root.display()
        );
        let result = store::store_bench(&root, &loader, &args).await;
        std::fs::remove_dir_all(&root).ok();
        return result;
    }
    let bin = nodes::node_binary(args.node_bin.as_deref())?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()?;
    let loader = Loader::new(args.doc_size);
    let result = if args.latency {
        println!(
            "rag-bench --latency: {} writes of ~{} B one at a time per figure, {} run(s), node binary {}",
            args.latency_writes,
            args.doc_size,
            args.runs,
            bin.display()
        );
        latency_mode(&args, &bin, &root, &http, &loader).await
    } else {
        sync_mode(&args, &bin, &root, &http, &loader).await
    };
    if args.keep {
        println!("data directories and node logs kept in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

/// The two-node figures and, with `--mesh5`, the mesh.
async fn sync_mode(
    args: &Args,
    bin: &Path,
    root: &Path,
    http: &reqwest::Client,
    loader: &Loader,
) -> Result<()> {
    let sample = serde_json::to_vec(&loader.document(0, 0))?.len();
    println!(
        "rag-bench: {} docs of ~{} B ({} B of text; document JSON {} B), batch {}, {} run(s), node binary {}",
        args.docs,
        args.doc_size,
        loader.text_len,
        sample,
        args.batch_size,
        args.runs,
        bin.display()
    );
    if !args.no_pair {
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let figures = scenarios::pair_run(args, bin, root, http, loader, run).await?;
            println!("{}", report::run_line(run, &figures));
            runs.push(figures);
        }
        for l in report::pair_summary(&runs, args.docs) {
            println!("{l}");
        }
    }
    if args.mesh5 {
        let m = scenarios::mesh5(args, bin, root, http, loader).await?;
        println!("{}", report::mesh_line(&m, args.mesh_docs));
    }
    Ok(())
}

/// The live-delivery figures, one line per run and the summary.
async fn latency_mode(
    args: &Args,
    bin: &Path,
    root: &Path,
    http: &reqwest::Client,
    loader: &Loader,
) -> Result<()> {
    let mut runs = Vec::new();
    for run in 0..args.runs {
        let ctx = latency::Ctx {
            args,
            bin,
            root,
            http,
            loader,
            run,
        };
        let figures = latency::latency_run(&ctx).await?;
        println!("{}", report::latency_run_line(run, &figures));
        runs.push(figures);
    }
    for l in report::latency_summary(&runs) {
        println!("{l}");
    }
    Ok(())
}
