//! Real `rag-node` processes: where the binary is, starting one on a free loopback port with
//! a fresh data directory, what it costs (through `/proc`), and stopping it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::procfs;

/// The rag-node binary: `explicit` (`--node-bin`) or `rag-node` next to this binary.
pub fn node_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(b) = explicit {
        return Ok(b.to_path_buf());
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

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    keep: bool,
}

impl Node {
    pub async fn start(
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

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident set size (VmHWM) in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        procfs::peak_rss(pid)
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.pid().map_or(0.0, procfs::cpu_seconds)
    }

    /// CPU time of the store's own threads (writer and checkpointer), in seconds: what
    /// compaction costs, without the status requests the bench makes meanwhile.
    pub fn store_threads_cpu_seconds(&self) -> f64 {
        self.pid()
            .map_or(0.0, |pid| procfs::threads_cpu_seconds(pid, "sqlite-"))
    }

    /// Bytes of the node's database file and of its write-ahead log.
    pub fn disk_bytes(&self) -> (u64, u64) {
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
