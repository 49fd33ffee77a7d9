//! The live-delivery figures (`--latency`): how long a write through the data API takes to
//! be on every other node when only live delivery can move it (every peer's anti-entropy
//! period is an hour), in a 5-node mesh, a 16-node mesh and a hub with 15 spokes; what the
//! idle 16-node mesh costs in CPU; and delivery latency and memory under a sustained stream
//! of writes to one node with four live peers.
//!
//! Arrival is seen without polling, by [`crate::feeds::Feeds`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::api::{call, configure_pulls, put_document, wait_rounds};
use crate::corpus::Loader;
use crate::debug::{debug_rss_series, debug_thread_cpu_total, thread_cpu_snapshot};
use crate::feeds::{Feeds, COLLECTION};
use crate::nodes::Node;
use crate::procfs;
use crate::report::quantile;
use crate::Args;

/// Every peer's anti-entropy period: longer than a run, so no timer moves data.
const INTERVAL_SECONDS: u64 = 3600;
/// Pause between two writes of the one-at-a-time figures.
const GAP: Duration = Duration::from_millis(20);
/// The idle figure: quiet time after the writes, then the measured window.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// The sustained stream: writes per second, for how long, and PUTs in flight to hold it.
const SUSTAINED_RATE: u64 = 2000;
const SUSTAINED_FOR: Duration = Duration::from_secs(10);
const SUSTAINED_IN_FLIGHT: usize = 16;
const SUSTAINED_PEERS: usize = 4;

/// Delivery latencies of one figure, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// How many latencies these are (writes, or writes × peers).
    pub count: usize,
}

impl Delivery {
    fn of(latencies: &[Duration]) -> Delivery {
        let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        Delivery {
            p50_ms: quantile(&ms, 0.5),
            p99_ms: quantile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
            count: ms.len(),
        }
    }
}

/// One node's resident set (VmRSS) over the sustained stream, sampled every second from the
/// first write: the first sample (the fresh node), the one halfway through the stream, the
/// last (every change delivered) and the largest, in bytes.
#[derive(Debug, Clone)]
pub struct RssSeries {
    pub node: String,
    pub first: f64,
    pub mid: f64,
    pub last: f64,
    pub max: f64,
}

/// The sustained stream's figures.
#[derive(Debug, Clone)]
pub struct Sustained {
    /// Writes acknowledged per second, over the whole stream.
    pub rate: f64,
    /// Per change and peer: from the write's acknowledgement to its arrival on the peer.
    pub delivery: Delivery,
    pub rss: Vec<RssSeries>,
}

/// One `--latency` run's figures; with `--latency-only-5` only the 5-node mesh.
#[derive(Debug, Clone, Default)]
pub struct LatencyFigures {
    pub mesh5: Delivery,
    pub mesh16: Option<Delivery>,
    /// CPU of all 16 nodes of the idle mesh, in percent of one core.
    pub idle_cpu_pct: Option<f64>,
    pub hub: Option<Delivery>,
    pub sustained: Option<Sustained>,
    /// `--latency-sparse N`: node count and write-to-all delivery.
    pub sparse: Option<(usize, Delivery)>,
}

/// Where a run's nodes come from and what they share.
pub struct Ctx<'a> {
    pub args: &'a Args,
    pub bin: &'a Path,
    pub root: &'a Path,
    pub http: &'a reqwest::Client,
    pub loader: &'a Loader,
    pub run: usize,
}

/// Starts `count` fresh nodes named `lat{run}-{prefix}{i}`, creates the collection on node
/// 0, has node `i` pull from `sources(i)` with the hour-long period, follows the feeds of
/// nodes `watched`, and returns once every watched node has the collection and every node
/// has had its first round with each of its peers (the one a config change starts).
async fn topology(
    ctx: &Ctx<'_>,
    prefix: &str,
    count: usize,
    sources: impl Fn(usize) -> Vec<usize>,
    watched: impl Fn(usize) -> bool,
) -> Result<(Vec<Node>, Feeds)> {
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("lat{}-{prefix}{}", ctx.run, i + 1);
        let id = 100 + i as u16;
        nodes.push(Node::start(ctx.bin, ctx.root, &name, id, ctx.http, ctx.args.keep).await?);
    }
    call(
        ctx.http,
        reqwest::Method::PUT,
        format!("{}/collections/{COLLECTION}", nodes[0].url()),
        Some(json!({})),
    )
    .await?;
    for (i, n) in nodes.iter().enumerate() {
        let from: Vec<&Node> = sources(i).into_iter().map(|j| &nodes[j]).collect();
        configure_pulls(
            ctx.http,
            n,
            &from,
            INTERVAL_SECONDS,
            ctx.args.batch_size,
            true,
        )
        .await?;
    }
    let watch: Vec<&Node> = (0..count)
        .filter(|i| watched(*i))
        .map(|i| &nodes[i])
        .collect();
    let urls: Vec<String> = watch.iter().map(|n| n.url()).collect();
    let feeds = Feeds::start(ctx.http, &urls, None);
    feeds.wait_collection().await?;
    for n in &nodes {
        wait_rounds(ctx.http, n).await?;
    }
    Ok((nodes, feeds))
}

/// Writes `writes` documents one at a time, `GAP` apart, the k-th on node
/// `writers[k % writers.len()]`; every node is watched. Per write: from just before its PUT
/// was sent until the last of the other nodes showed it.
async fn one_at_a_time(
    ctx: &Ctx<'_>,
    nodes: &[Node],
    feeds: &Feeds,
    writers: &[usize],
) -> Result<Vec<Duration>> {
    let writes = ctx.args.latency_writes;
    let mut sent = Vec::with_capacity(writes);
    for k in 0..writes {
        let origin = writers[k % writers.len()];
        let mut doc = ctx.loader.document(k, 0);
        doc.id = format!("w-{k:06}");
        let url = nodes[origin].url();
        let before = Instant::now();
        put_document(ctx.http, &url, COLLECTION, &doc.id, &doc).await?;
        sent.push((doc.id, origin, before));
        tokio::time::sleep(GAP).await;
    }
    feeds.wait_docs(writes).await?;
    let seen = feeds.arrivals();
    Ok(sent
        .iter()
        .map(|(id, origin, before)| {
            (0..nodes.len())
                .filter(|n| n != origin)
                .map(|n| seen[n][id].saturating_duration_since(*before))
                .max()
                .unwrap_or_default()
        })
        .collect())
}

/// Every node pulls from every other.
fn full_mesh(count: usize) -> impl Fn(usize) -> Vec<usize> {
    move |i| (0..count).filter(|j| *j != i).collect()
}

/// An `n`-node full mesh: writes round-robin over all nodes.
async fn mesh(ctx: &Ctx<'_>, count: usize) -> Result<(Vec<Node>, Feeds, Delivery)> {
    let (nodes, feeds) = topology(ctx, &format!("m{count}-n"), count, full_mesh(count), |_| {
        true
    })
    .await?;
    let writers: Vec<usize> = (0..count).collect();
    let latencies = one_at_a_time(ctx, &nodes, &feeds, &writers).await?;
    Ok((nodes, feeds, Delivery::of(&latencies)))
}

/// Node 0 is the hub and pulls from every spoke; every spoke pulls from the hub. Writes
/// round-robin over the spokes, so reaching the other spokes takes two hops.
async fn hub(ctx: &Ctx<'_>, spokes: usize) -> Result<Delivery> {
    let count = spokes + 1;
    let sources = move |i: usize| {
        if i == 0 {
            (1..count).collect()
        } else {
            vec![0]
        }
    };
    let (nodes, feeds) = topology(ctx, "hub-n", count, sources, |_| true).await?;
    let writers: Vec<usize> = (1..count).collect();
    let latencies = one_at_a_time(ctx, &nodes, &feeds, &writers).await?;
    Ok(Delivery::of(&latencies))
}

/// CPU of `nodes` (utime + stime) over `IDLE_WINDOW`, after `IDLE_SETTLE` of quiet, in
/// percent of one core. Only the bench's waiting requests stay open meanwhile.
async fn idle_cpu(nodes: &[Node]) -> f64 {
    let all: Vec<&Node> = nodes.iter().collect();
    tokio::time::sleep(IDLE_SETTLE).await;
    let threads = thread_cpu_snapshot(&all);
    let before: f64 = all.iter().map(|n| n.cpu_seconds()).sum();
    let started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let used = all.iter().map(|n| n.cpu_seconds()).sum::<f64>() - before;
    let elapsed = started.elapsed().as_secs_f64();
    debug_thread_cpu_total("idle mesh16", &threads, &all);
    used / elapsed * 100.0
}

/// VmRSS of process `pid` in bytes (0 if it is gone).
fn rss(pid: Option<u32>) -> f64 {
    let status = pid.map(procfs::status).unwrap_or_default();
    procfs::status_field(&status, "VmRSS:")
        .parse::<f64>()
        .unwrap_or(0.0)
        * 1024.0
}

/// `SUSTAINED_RATE` writes per second for `SUSTAINED_FOR` through the data API on node 0,
/// `SUSTAINED_IN_FLIGHT` PUTs at most in flight, with `SUSTAINED_PEERS` nodes pulling from
/// it live; every node's VmRSS sampled each second from the first write until every peer
/// had every change.
async fn sustained(ctx: &Ctx<'_>) -> Result<Sustained> {
    let count = SUSTAINED_PEERS + 1;
    let sources = |i: usize| if i == 0 { vec![] } else { vec![0] };
    let (nodes, feeds) = topology(ctx, "sus-n", count, sources, |i| i > 0).await?;
    let pids: Vec<Option<u32>> = nodes.iter().map(Node::pid).collect();
    let samples = Arc::new(Mutex::new(Vec::<Vec<f64>>::new()));
    let sampler = {
        let (pids, samples) = (pids.clone(), samples.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let s: Vec<f64> = pids.iter().map(|p| rss(*p)).collect();
                samples.lock().unwrap().push(s);
            }
        })
    };

    let total = SUSTAINED_RATE * SUSTAINED_FOR.as_secs();
    let url = nodes[0].url();
    let start = Instant::now();
    let acks: Vec<(String, Instant)> = futures::stream::iter(0..total)
        .map(|i| {
            let url = url.clone();
            let slot = start + Duration::from_micros(i * 1_000_000 / SUSTAINED_RATE);
            async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(slot)).await;
                let mut doc = ctx.loader.document(i as usize, 0);
                doc.id = format!("s-{i:06}");
                put_document(ctx.http, &url, COLLECTION, &doc.id, &doc).await?;
                Ok::<_, anyhow::Error>((doc.id, Instant::now()))
            }
        })
        .buffer_unordered(SUSTAINED_IN_FLIGHT)
        .try_collect()
        .await?;
    let last_ack = acks.iter().map(|(_, t)| *t).max().unwrap_or(start);
    let rate = total as f64 / last_ack.duration_since(start).as_secs_f64();
    let delivered = feeds.wait_docs(total as usize).await;
    sampler.abort();
    delivered?;
    let mut samples = std::mem::take(&mut *samples.lock().unwrap());
    samples.push(pids.iter().map(|p| rss(*p)).collect());

    let seen = feeds.arrivals();
    let latencies: Vec<Duration> = acks
        .iter()
        .flat_map(|(id, ack)| seen.iter().map(|s| s[id].saturating_duration_since(*ack)))
        .collect();
    let rss = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let series: Vec<f64> = samples.iter().map(|s| s[i]).collect();
            debug_rss_series("sustained", &n.name, &series);
            RssSeries {
                node: n.name.clone(),
                first: series[0],
                mid: series[(SUSTAINED_FOR.as_secs() as usize / 2).min(series.len() - 1)],
                last: series[series.len() - 1],
                max: series.iter().copied().fold(0.0, f64::max),
            }
        })
        .collect();
    Ok(Sustained {
        rate,
        delivery: Delivery::of(&latencies),
        rss,
    })
}

/// One `--latency` run on fresh nodes.
/// Each node pulls from its ring predecessor and two chords (a third and a half of the way
/// round): in-degree 3 and a diameter of a few hops, like the operator's `Sparse`.
fn sparse_sources(count: usize) -> impl Fn(usize) -> Vec<usize> {
    move |i| {
        let mut from: Vec<usize> = [1, count / 3, count / 2]
            .iter()
            .map(|d| (i + count - d.max(&1)) % count)
            .filter(|j| *j != i)
            .collect();
        from.sort_unstable();
        from.dedup();
        from
    }
}

/// An `n`-node sparse graph: writes round-robin over all nodes. Writes slower than
/// `SLOW` are named with the nodes that were last to show them.
async fn sparse(ctx: &Ctx<'_>, count: usize) -> Result<Delivery> {
    const SLOW: Duration = Duration::from_secs(2);
    let (nodes, feeds) = topology(
        ctx,
        &format!("s{count}-n"),
        count,
        sparse_sources(count),
        |_| true,
    )
    .await?;
    let writers: Vec<usize> = (0..count).collect();
    let latencies = one_at_a_time(ctx, &nodes, &feeds, &writers).await?;
    for (k, l) in latencies.iter().enumerate().filter(|(_, l)| **l > SLOW) {
        eprintln!(
            "slow: write w-{k:06} from node {} took {l:?}",
            writers[k % count] + 1
        );
    }
    Ok(Delivery::of(&latencies))
}

pub async fn latency_run(ctx: &Ctx<'_>) -> Result<LatencyFigures> {
    if ctx.args.latency_sparse > 0 {
        let n = ctx.args.latency_sparse;
        return Ok(LatencyFigures {
            sparse: Some((n, sparse(ctx, n).await?)),
            ..Default::default()
        });
    }
    let (nodes, feeds, mesh5) = mesh(ctx, 5).await?;
    drop(feeds);
    drop(nodes);
    if ctx.args.latency_only_5 {
        return Ok(LatencyFigures {
            mesh5,
            ..Default::default()
        });
    }
    let (nodes, feeds, mesh16) = mesh(ctx, 16).await?;
    let idle = idle_cpu(&nodes).await;
    drop(feeds);
    drop(nodes);
    let hub = hub(ctx, 15).await?;
    let sustained = sustained(ctx).await?;
    Ok(LatencyFigures {
        mesh5,
        mesh16: Some(mesh16),
        idle_cpu_pct: Some(idle),
        hub: Some(hub),
        sustained: Some(sustained),
        sparse: None,
    })
}
