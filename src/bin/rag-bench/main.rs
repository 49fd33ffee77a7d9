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
//! Run it with `make bench` (release build) or
//! `target/release/rag-bench --docs 1000000 --runs 1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use rag_sync::hlc::HlcClock;
use rag_sync::model::{Change, ChangeBody, Document, Metadata, NodeId, Version, VersionVector};
use rag_sync::wire::PushRequest;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
}

// ---------------------------------------------------------------------------------------
// Deterministic text that compresses like prose.

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A vocabulary of 5,000 pseudo-words drawn with a Zipf(1.2) law. Calibrated so that the
/// text is slightly *less* compressible than English prose: 900-char pieces gzip (-6) to
/// about 0.52 of their size alone and 1 MB of them to about 0.41 (the GPL-3 text: 0.52 and
/// 0.35), so the wire figures are not flattered by an easy corpus.
struct TextGen {
    vocab: Vec<String>,
    cumulative: Vec<f64>,
}

impl TextGen {
    fn new() -> TextGen {
        const CONS: &[u8] = b"bcdfghjklmnprstvwz";
        const VOW: &[u8] = b"aeiou";
        let mut rng = Rng::new(7);
        let mut seen = std::collections::HashSet::new();
        let mut vocab = Vec::new();
        while vocab.len() < 5000 {
            let syllables = [1, 1, 2, 2, 2, 3, 3, 4][rng.below(8) as usize];
            let mut w = String::new();
            for _ in 0..syllables {
                w.push(CONS[rng.below(CONS.len() as u64) as usize] as char);
                w.push(VOW[rng.below(VOW.len() as u64) as usize] as char);
                if rng.unit() < 0.3 {
                    w.push(CONS[rng.below(CONS.len() as u64) as usize] as char);
                }
            }
            if seen.insert(w.clone()) {
                vocab.push(w);
            }
        }
        vocab.sort_by_key(|w| w.len());
        let mut cumulative = Vec::with_capacity(vocab.len());
        let mut total = 0.0;
        for i in 0..vocab.len() {
            total += 1.0 / ((i + 1) as f64).powf(1.2);
            cumulative.push(total);
        }
        TextGen { vocab, cumulative }
    }

    fn text(&self, seed: u64, len: usize) -> String {
        let mut rng = Rng::new(seed);
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let mut out = String::with_capacity(len + 16);
        let mut capital = true;
        let mut in_sentence = 0;
        let mut sentence_len = 6 + rng.below(13);
        while out.len() < len {
            let x = rng.unit() * total;
            let i = self.cumulative.partition_point(|c| *c < x);
            let w = &self.vocab[i.min(self.vocab.len() - 1)];
            if !out.is_empty() {
                out.push(' ');
            }
            if capital {
                let mut cs = w.chars();
                if let Some(f) = cs.next() {
                    out.push(f.to_ascii_uppercase());
                    out.push_str(cs.as_str());
                }
                capital = false;
            } else {
                out.push_str(w);
            }
            in_sentence += 1;
            if in_sentence >= sentence_len {
                let p = [".", ".", ".", ",", ";"][rng.below(5) as usize];
                out.push_str(p);
                capital = p == ".";
                in_sentence = 0;
                sentence_len = 6 + rng.below(13);
            }
        }
        out.truncate(len);
        out
    }
}

/// The loader: builds documents and the bulk-push bodies that carry them.
struct Loader {
    text: TextGen,
    text_len: usize,
    origin: NodeId,
    clock: HlcClock,
}

const COLLECTION: &str = "docs";

impl Loader {
    fn new(doc_size: usize) -> Loader {
        Loader {
            text: TextGen::new(),
            // id, collection and metadata take ~120 bytes of the document's JSON.
            text_len: doc_size.saturating_sub(124).max(16),
            origin: NodeId(0xbe00),
            clock: HlcClock::system(),
        }
    }

    fn document(&self, i: usize, revision: u64) -> Document {
        Document {
            id: format!("doc-{i:09}"),
            content: self.text.text((i as u64) ^ (revision << 40), self.text_len),
            metadata: Metadata::from_value(json!({
                "source": "rag-bench",
                "lang": "en",
                "seq": i,
                "rev": revision,
                "tags": [format!("t{}", i % 7), format!("t{}", i % 11)],
            }))
            .expect("an object"),
            embedding: None,
        }
    }

    /// A `POST /sync/changes` body writing documents `ids` at `revision`.
    fn push_body(&self, ids: impl Iterator<Item = usize>, revision: u64) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(&PushRequest {
            changes: self.changes(ids, revision),
            source_watermark: self.clock.peek(),
        })?)
    }

    /// Changes writing documents `ids` at `revision`, as the loader's origin node made them
    /// (each one's cursor is its HLC, as in that node's log).
    fn changes(&self, ids: impl Iterator<Item = usize>, revision: u64) -> Vec<Change> {
        ids.map(|i| {
            let hlc = self.clock.now();
            let document = self.document(i, revision);
            let body = if revision == 0 {
                ChangeBody::DocumentInsert {
                    collection: COLLECTION.into(),
                    document,
                }
            } else {
                ChangeBody::DocumentUpdate {
                    collection: COLLECTION.into(),
                    document,
                }
            };
            Change {
                cursor: hlc,
                version: Version {
                    hlc,
                    node: self.origin,
                    vv: VersionVector([(self.origin, hlc)].into_iter().collect()),
                },
                body,
                conflicts: Vec::new(),
            }
        })
        .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Nodes.

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Node {
    name: String,
    addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    keep: bool,
}

impl Node {
    async fn start(
        bin: &Path,
        root: &Path,
        name: &str,
        node_id: u16,
        http: &reqwest::Client,
        keep: bool,
    ) -> Result<Node> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut last_err = None;
        for _attempt in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let log = std::fs::File::create(dir.join("node.log"))?;
            let child = Command::new(bin)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--node-id")
                .arg(node_id.to_string())
                .env(
                    "RUST_LOG",
                    std::env::var("RAG_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .env_remove("RAG_SYNC_TOKEN")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut node = Node {
                name: name.to_string(),
                addr,
                dir: dir.clone(),
                child: Some(child),
                keep,
            };
            let started = Instant::now();
            loop {
                if let Ok(r) = http.get(format!("{}/readyz", node.url())).send().await {
                    if r.status().is_success() {
                        return Ok(node);
                    }
                }
                if let Some(c) = node.child.as_mut() {
                    if let Some(status) = c.try_wait()? {
                        node.child = None;
                        last_err = Some(anyhow!(
                            "{name} exited with {status}: {}",
                            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
                        ));
                        break;
                    }
                }
                if started.elapsed() > Duration::from_secs(30) {
                    bail!("{name} did not become ready in 30 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("{name} did not start")))
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident set size (VmHWM) in bytes.
    fn peak_rss(&self) -> Result<u64> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("VmHWM:") {
                let kb: u64 = v.trim().trim_end_matches("kB").trim().parse()?;
                return Ok(kb * 1024);
            }
        }
        bail!("no VmHWM for pid {pid}")
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let Some(pid) = self.pid() else { return 0.0 };
        stat_cpu_seconds(&format!("/proc/{pid}/stat"))
    }

    /// CPU time of the store's own threads (writer and checkpointer), in seconds: what
    /// compaction costs, without the status requests the bench makes meanwhile.
    fn store_threads_cpu_seconds(&self) -> f64 {
        self.pid()
            .map_or(0.0, |pid| threads_cpu_seconds(pid, "sqlite-"))
    }

    /// Bytes of the node's database file and of its write-ahead log.
    fn disk_bytes(&self) -> (u64, u64) {
        let size = |name: &str| {
            std::fs::metadata(self.dir.join("data").join(name))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        (size("rag.db"), size("rag.db-wal"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Result<Value> {
    let mut req = http.request(method.clone(), &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "{method} {url} answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
    }
    Ok(serde_json::from_slice(&bytes)?)
}

async fn push_raw(http: &reqwest::Client, node: &str, body: Vec<u8>) -> Result<()> {
    let resp = http
        .post(format!("{node}/sync/changes"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "bulk push answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
    }
    Ok(())
}

/// Pushes documents `ids` (at `revision`) into `node` in batches, two requests in flight
/// (one being built while the other is applied). Returns the elapsed time.
async fn bulk_write(
    http: &reqwest::Client,
    loader: &Loader,
    node: &str,
    ids: Vec<usize>,
    batch: usize,
    revision: u64,
) -> Result<Duration> {
    let started = Instant::now();
    futures::stream::iter(ids.chunks(batch.max(1)))
        .map(|chunk| {
            let body = loader.push_body(chunk.iter().copied(), revision);
            async move { push_raw(http, node, body?).await }
        })
        .buffer_unordered(2)
        .try_collect::<()>()
        .await?;
    Ok(started.elapsed())
}

/// Count and order-independent digest of a node's records: every change of its log,
/// without the node-local cursor and with Insert/Update (node-local history) folded.
async fn digest(http: &reqwest::Client, node: String) -> Result<(u64, u128)> {
    let mut since = "0000000000000000".to_string();
    let (mut count, mut sum) = (0u64, 0u128);
    loop {
        let page = call(
            http,
            reqwest::Method::GET,
            format!("{node}/sync/changes?since={since}&limit=10000"),
            None,
        )
        .await?;
        let changes = page["changes"]
            .as_array()
            .ok_or_else(|| anyhow!("no changes array from {node}"))?;
        for c in changes {
            let mut c = c.clone();
            let obj = c
                .as_object_mut()
                .ok_or_else(|| anyhow!("change is not an object"))?;
            obj.remove("cursor");
            if obj.get("op").and_then(Value::as_str) == Some("DocumentInsert") {
                obj.insert("op".into(), json!("DocumentUpdate"));
            }
            let h = Sha256::digest(canonical(&c).as_bytes());
            let mut b = [0u8; 16];
            b.copy_from_slice(&h[..16]);
            sum = sum.wrapping_add(u128::from_le_bytes(b));
            count += 1;
        }
        since = page["watermark"]
            .as_str()
            .ok_or_else(|| anyhow!("no watermark"))?
            .to_string();
        if !page["has_more"].as_bool().unwrap_or(false) {
            return Ok((count, sum));
        }
    }
}

/// JSON with object keys sorted, so equal values hash equally whatever the key order.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

async fn same_records(http: &reqwest::Client, a: &Node, b: &Node) -> Result<u64> {
    let (da, db) = futures::try_join!(digest(http, a.url()), digest(http, b.url()))?;
    if da != db {
        bail!(
            "{} and {} differ: {} records (digest {:032x}) vs {} records (digest {:032x})",
            a.name,
            b.name,
            da.0,
            da.1,
            db.0,
            db.1
        );
    }
    Ok(da.0)
}

// ---------------------------------------------------------------------------------------
// The byte-counting proxy between B and A.

#[derive(Clone, Default)]
struct Counter {
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Counter {
    fn total(&self) -> u64 {
        self.up.load(Ordering::Relaxed) + self.down.load(Ordering::Relaxed)
    }
}

/// Listens on a loopback port and forwards every connection to `target`, counting the
/// bytes each way: exactly what crosses the wire (request and status lines, headers,
/// compressed bodies, chunk framing).
async fn start_proxy(target: SocketAddr) -> Result<(SocketAddr, Counter)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counter = Counter::default();
    let c = counter.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let _ = tokio::join!(pump(cr, sw, c.up.clone()), pump(sr, cw, c.down.clone()));
            });
        }
    });
    Ok((addr, counter))
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The two-node run.

#[derive(Debug, Clone, Default)]
struct RunFigures {
    ingest_dps: f64,
    full_dps: f64,
    incr_dps: f64,
    full_bytes_per_doc: f64,
    incr_bytes_per_doc: f64,
    rss_a: f64,
    rss_b: f64,
    disk_a: f64,
    wal_a: f64,
    /// CPU microseconds per document, full sync: (A, B).
    full_cpu_us: (f64, f64),
    incr_cpu_us: (f64, f64),
    /// B's CPU microseconds per changed document deleting the versions they replaced.
    compaction_cpu_us: f64,
    /// Changed documents per second if B's compaction ran within the sync, serially.
    incr_with_compaction_dps: f64,
}

/// `perf record` attached to a process until stopped.
struct Perf(Option<Child>);

impl Perf {
    fn start(dir: Option<&Path>, node: &Node, phase: &str) -> Result<Perf> {
        Perf::attach(dir, node.pid(), &format!("{}-{phase}", node.name))
    }

    /// Records process `pid` into `dir/{label}.data`; nothing without a directory.
    fn attach(dir: Option<&Path>, pid: Option<u32>, label: &str) -> Result<Perf> {
        let (Some(dir), Some(pid)) = (dir, pid) else {
            return Ok(Perf(None));
        };
        std::fs::create_dir_all(dir)?;
        let out = dir.join(format!("{label}.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "1999", "--call-graph", "dwarf,32768", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Perf(Some(child)))
    }

    fn stop(mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

async fn sync_now(http: &reqwest::Client, node: &Node) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let v = call(
        http,
        reqwest::Method::POST,
        format!("{}/admin/sync", node.url()),
        None,
    )
    .await?;
    let elapsed = started.elapsed();
    let peers = v["peers"]
        .as_array()
        .ok_or_else(|| anyhow!("bad /admin/sync answer: {v}"))?;
    for p in peers {
        if !p["error"].is_null() {
            bail!("sync round on {} failed: {}", node.name, p["error"]);
        }
    }
    Ok((elapsed, v))
}

fn pulled(v: &Value) -> u64 {
    v["peers"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["pulled"].as_u64()).sum())
        .unwrap_or(0)
}

/// CPU time of process `pid`'s threads whose name starts with `prefix`, in seconds.
fn threads_cpu_seconds(pid: u32, prefix: &str) -> f64 {
    sched_by_thread_name(pid)
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, (cpu, _))| cpu)
        .sum()
}

/// Per thread name, seconds on a CPU and seconds runnable but waiting for one (the first
/// two fields of each thread's `schedstat`, in nanoseconds; `stat` counts 10 ms ticks).
fn sched_by_thread_name(pid: u32) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(t.path().join("comm")),
            std::fs::read_to_string(t.path().join("schedstat")),
        ) else {
            continue;
        };
        let mut f = stat
            .split_whitespace()
            .map(|v| v.parse::<f64>().unwrap_or(0.0) / 1e9);
        let (cpu, wait) = (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0));
        let e: &mut (f64, f64) = out.entry(name.trim().to_string()).or_default();
        e.0 += cpu;
        e.1 += wait;
    }
    out
}

/// With `RAG_BENCH_DEBUG` set, prints each node's CPU µs per document in a phase, by thread
/// name, from snapshots taken before it, and in brackets the µs per document the thread was
/// runnable but waiting for a CPU.
fn debug_thread_cpu(
    phase: &str,
    docs: usize,
    before: &[std::collections::BTreeMap<String, (f64, f64)>],
    nodes: &[&Node],
) {
    if std::env::var_os("RAG_BENCH_DEBUG").is_none() {
        return;
    }
    let per_doc = |s: f64| s * 1e6 / docs as f64;
    for (n, before) in nodes.iter().zip(before) {
        let now = n.pid().map(sched_by_thread_name).unwrap_or_default();
        let parts: Vec<String> = now
            .iter()
            .map(|(name, (cpu, wait))| {
                let (b_cpu, b_wait) = before.get(name).copied().unwrap_or_default();
                (name, cpu - b_cpu, wait - b_wait)
            })
            .filter(|(_, cpu, _)| *cpu > 0.0)
            .map(|(name, cpu, wait)| format!("{name} {:.1} [{:.1}]", per_doc(cpu), per_doc(wait)))
            .collect();
        eprintln!(
            "  [{phase}] {} CPU µs/doc [run-queue wait]: {}",
            n.name,
            parts.join(", ")
        );
    }
}

/// Per-thread scheduler snapshots of `nodes` for [`debug_thread_cpu`].
fn thread_cpu_snapshot(nodes: &[&Node]) -> Vec<std::collections::BTreeMap<String, (f64, f64)>> {
    nodes
        .iter()
        .map(|n| n.pid().map(sched_by_thread_name).unwrap_or_default())
        .collect()
}

/// User + system CPU seconds in a `/proc/.../stat` file (0 if it is gone).
fn stat_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th
    // of them, in clock ticks (USER_HZ, 100 on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Polls `node`'s `GET /admin/status` until `done` holds for it; fails after `limit`.
async fn wait_status(
    http: &reqwest::Client,
    node: &Node,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let s = call(
            http,
            reqwest::Method::GET,
            format!("{}/admin/status", node.url()),
            None,
        )
        .await?;
        if done(&s) {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("{}: {what} did not happen within {limit:?}", node.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `node` holds no superseded versions (its writer compacts once idle).
async fn wait_compacted(http: &reqwest::Client, node: &Node) -> Result<()> {
    wait_status(http, node, "compaction", Duration::from_secs(120), |s| {
        s["superseded"].as_u64() == Some(0)
    })
    .await
}

/// Waits until `node`'s store has no background work left: every commit copied into the
/// database file and every replaced version deleted.
async fn wait_idle(http: &reqwest::Client, node: &Node) -> Result<()> {
    wait_status(
        http,
        node,
        "background work",
        Duration::from_secs(120),
        |s| s["superseded"].as_u64() == Some(0) && s["checkpoint_pending"] == false,
    )
    .await
}

/// Waits until `node` has finished a round with `peer` (the one its scheduler starts when
/// the config changes), so that the timed round is the only one that moves data.
async fn wait_round(http: &reqwest::Client, node: &Node, peer: &str) -> Result<()> {
    wait_status(http, node, "a first round", Duration::from_secs(60), |s| {
        s["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["peer_id"] == peer && !p["last_attempt_ms"].is_null())
    })
    .await
}

/// With `RAG_BENCH_DEBUG` set, prints the nodes' current and peak RSS.
fn debug_rss(phase: &str, nodes: &[&Node]) {
    if std::env::var_os("RAG_BENCH_DEBUG").is_none() {
        return;
    }
    for n in nodes {
        let status = n
            .pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .unwrap_or_default();
        let pick = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
                .unwrap_or_default()
        };
        eprintln!(
            "  [{phase}] {}: RSS {} kB (anon {}, file {}), peak {} kB, threads {}",
            n.name,
            pick("VmRSS:"),
            pick("RssAnon:"),
            pick("RssFile:"),
            pick("VmHWM:"),
            pick("Threads:")
        );
    }
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

async fn pair_run(
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
    // another while we measure.
    call(
        http,
        reqwest::Method::PUT,
        format!("{}/admin/config", b.url()),
        Some(json!({
            "peers": [{"peer_id": "a", "endpoint": format!("http://{proxy}"), "direction": "pull"}],
            "interval_seconds": 86_400,
            "batch_size": args.batch_size,
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

    let figures = RunFigures {
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
    };
    println!(
        "  run {}: ingest {:.0}/s ({:.2} s); full {:.0}/s ({:.2} s, {:.0} B/doc, CPU µs/doc A {:.1} B {:.1}); incremental {:.0}/s ({:.2} s, {:.0} B/doc, CPU µs/doc A {:.1} B {:.1}; then compaction on B: CPU µs/doc {:.1}, done {:.2} s after the sync); peak RSS A {:.1} MiB, B {:.1} MiB",
        run + 1,
        figures.ingest_dps,
        ingest.as_secs_f64(),
        figures.full_dps,
        full.as_secs_f64(),
        figures.full_bytes_per_doc,
        figures.full_cpu_us.0,
        figures.full_cpu_us.1,
        figures.incr_dps,
        incr.as_secs_f64(),
        figures.incr_bytes_per_doc,
        figures.incr_cpu_us.0,
        figures.incr_cpu_us.1,
        figures.compaction_cpu_us,
        compaction.as_secs_f64(),
        figures.rss_a / MIB,
        figures.rss_b / MIB,
    );
    Ok(figures)
}

// ---------------------------------------------------------------------------------------
// The five-node mesh.

async fn configure(
    http: &reqwest::Client,
    node: &Node,
    peers: &[&Node],
    batch: usize,
) -> Result<()> {
    let peers: Vec<Value> = peers
        .iter()
        .filter(|p| p.name != node.name)
        .map(|p| json!({"peer_id": p.name, "endpoint": p.url(), "direction": "pull"}))
        .collect();
    call(
        http,
        reqwest::Method::PUT,
        format!("{}/admin/config", node.url()),
        Some(json!({"peers": peers, "interval_seconds": 86_400, "batch_size": batch})),
    )
    .await?;
    Ok(())
}

async fn round_all(http: &reqwest::Client, nodes: &[&Node]) -> Result<()> {
    futures::future::try_join_all(nodes.iter().map(|n| sync_now(http, n))).await?;
    Ok(())
}

/// Local writes through the data API (`PUT /collections/docs/documents/{id}`), 32 in flight,
/// spread over `nodes`.
async fn put_documents(
    http: &reqwest::Client,
    loader: &Loader,
    nodes: &[&Node],
    ids: Vec<String>,
    revision: u64,
) -> Result<()> {
    futures::stream::iter(ids.into_iter().enumerate())
        .map(|(k, id)| {
            let node = nodes[k % nodes.len()].url();
            let mut doc = loader.document(k, revision);
            doc.id = id.clone();
            async move {
                call(
                    http,
                    reqwest::Method::PUT,
                    format!("{node}/collections/{COLLECTION}/documents/{id}"),
                    Some(json!({"content": doc.content, "metadata": doc.metadata})),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
}

struct MeshFigures {
    convergence: Duration,
    rounds: usize,
    records: u64,
    conflicts: u64,
    rss_max: f64,
}

async fn mesh5(
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

// ---------------------------------------------------------------------------------------

const MIB: f64 = 1024.0 * 1024.0;

/// (min, median, max).
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let med = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (v[0], med, v[v.len() - 1])
}

fn line(name: &str, unit: &str, values: Vec<f64>, scale: f64, decimals: usize) -> (f64, String) {
    let (lo, med, hi) = spread(values.into_iter().map(|x| x / scale).collect());
    (
        med,
        format!(
            "{name:<34} median {med:>10.decimals$}  min {lo:>10.decimals$}  max {hi:>10.decimals$}  {unit:<14}"
        ),
    )
}

fn check(ok: bool, target: &str) -> String {
    if ok {
        format!("(target {target}: met)")
    } else {
        format!("(target {target}: NOT met)")
    }
}

fn node_binary(args: &Args) -> Result<PathBuf> {
    if let Some(b) = &args.node_bin {
        return Ok(b.clone());
    }
    let me = std::env::current_exe()?;
    let bin = me
        .parent()
        .ok_or_else(|| anyhow!("no directory for {}", me.display()))?
        .join("rag-node");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release --bins` or pass --node-bin",
            bin.display()
        );
    }
    Ok(bin)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.docs == 0 || args.runs == 0 || args.batch_size == 0 {
        bail!("--docs, --runs and --batch-size must be positive");
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
    let bin = node_binary(&args)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()?;
    let loader = Loader::new(args.doc_size);
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

    let result = async {
        if !args.no_pair {
            let mut runs = Vec::new();
            for run in 0..args.runs {
                runs.push(pair_run(&args, &bin, &root, &http, &loader, run).await?);
            }
            let col = |f: fn(&RunFigures) -> f64| runs.iter().map(f).collect::<Vec<_>>();
            let (full, l) = line("full sync", "docs/s", col(|r| r.full_dps), 1.0, 0);
            println!("{l} {}", check(full >= 60_000.0, ">= 60000"));
            let (incr, l) = line(
                "incremental sync (every 10th doc)",
                "changed docs/s",
                col(|r| r.incr_dps),
                1.0,
                0);
            println!("{l} {}", check(incr >= 60_000.0, ">= 60000"));
            let (_, l) = line(
                "  counting B's deferred compaction",
                "changed docs/s",
                col(|r| r.incr_with_compaction_dps),
                1.0,
                0);
            println!("{l}");
            let (bytes, l) = line(
                "bytes on the wire, full sync",
                "B/doc",
                col(|r| r.full_bytes_per_doc),
                1.0,
                0);
            println!("{l} {}", check(bytes <= 600.0, "<= 600"));
            let (_, l) = line(
                "bytes on the wire, incremental",
                "B/changed doc",
                col(|r| r.incr_bytes_per_doc),
                1.0,
                0);
            println!("{l}");
            let (ra, l) = line("peak RSS node A (source)", "MiB", col(|r| r.rss_a), MIB, 1);
            println!("{l} {}", check(ra <= 100.0, "<= 100"));
            let (rb, l) = line("peak RSS node B (puller)", "MiB", col(|r| r.rss_b), MIB, 1);
            println!("{l} {}", check(rb <= 100.0, "<= 100"));
            let (_, l) = line(
                "bulk ingest into A (reference)",
                "docs/s",
                col(|r| r.ingest_dps),
                1.0,
                0);
            println!("{l}");
            let (ratio, l) = line(
                "replication / bulk ingest",
                "ratio",
                col(|r| r.full_dps / r.ingest_dps),
                1.0,
                2);
            println!("{l} {}", check(ratio >= 0.5, ">= 0.5"));
            let (_, l) = line(
                "store size on disk (A), database",
                "B/doc",
                col(|r| r.disk_a),
                args.docs as f64,
                0);
            let (_, wal, _) = spread(col(|r| r.wal_a));
            println!("{l} (+ WAL file {:.0} MiB)", wal / MIB);
        }
        if args.mesh5 {
            let m = mesh5(&args, &bin, &root, &http, &loader).await?;
            println!(
                "{:<34} {:>10.2} s  ({} docs per side, {} written on both; {} rounds; {} records, {} conflicts kept; peak RSS max {:.1} MiB)",
                "mesh5 convergence after partition",
                m.convergence.as_secs_f64(),
                args.mesh_docs,
                args.mesh_docs / 10,
                m.rounds,
                m.records,
                m.conflicts,
                m.rss_max / MIB
            );
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    if args.keep {
        println!("data directories and node logs kept in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}
