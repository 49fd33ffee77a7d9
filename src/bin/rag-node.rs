//! `rag-node`: the reference RAG node (SQLite store, data/sync/admin APIs, scheduler).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::serve::ListenerExt;
use clap::Parser;
use rag_sync::hlc::{HlcClock, SkewedClock};
use rag_sync::logging::LogFormat;
use rag_sync::store::{SqliteStore, Store};
use rag_sync::sync::client::ClientOptions;
use rag_sync::sync::SyncManager;

/// A RAG node whose document collections rag-sync keeps in sync with its peers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090", env = "RAG_NODE_LISTEN")]
    listen: std::net::SocketAddr,
    /// Directory for the SQLite store (created if missing).
    #[arg(long, default_value = "./rag-data", env = "RAG_NODE_DATA_DIR")]
    data_dir: PathBuf,
    /// 16-bit node id; when absent, generated once and kept in the data directory.
    #[arg(long, env = "RAG_NODE_ID")]
    node_id: Option<u16>,
    /// File holding the bearer token for the sync and admin APIs (overrides RAG_SYNC_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Refuse remote timestamps further ahead of the local clock than this.
    #[arg(long, default_value_t = rag_sync::hlc::DEFAULT_MAX_DRIFT_MS, env = "RAG_NODE_MAX_CLOCK_DRIFT_MS")]
    max_clock_drift_ms: u64,
    /// Shift this node's wall clock (testing skew only).
    #[arg(long, default_value_t = 0, hide = true, allow_negative_numbers = true)]
    clock_offset_ms: i64,
    /// Tombstones younger than this are kept even below the GC horizon.
    #[arg(long, default_value_t = 3600)]
    tombstone_min_age_seconds: u64,
    /// Most `GET /sync/changes?wait=` requests held at once; beyond, a 429.
    #[arg(long, default_value_t = rag_sync::sync::feed::DEFAULT_MAX_WAITING, env = "RAG_NODE_MAX_WAITING")]
    max_waiting: usize,
    #[arg(long, value_enum, default_value = "text", env = "RAG_NODE_LOG_FORMAT")]
    log_format: LogFormat,
}

fn read_token(args: &Args) -> anyhow::Result<Option<String>> {
    let raw = match &args.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading token file {}", f.display()))?,
        ),
        None => std::env::var("RAG_SYNC_TOKEN").ok(),
    };
    match raw.map(|t| t.trim().to_string()) {
        Some(t) if t.is_empty() => bail!("the sync token is empty"),
        other => Ok(other),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rag_sync::logging::init(args.log_format, "info");
    let token = read_token(&args)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let clock = HlcClock::new(SkewedClock(args.clock_offset_ms), args.max_clock_drift_ms);
    let store = SqliteStore::open(args.data_dir.join("rag.db"), args.node_id, clock)
        .context("opening the store")?;
    let store: Arc<dyn Store> = Arc::new(store);
    let opts = ClientOptions {
        token: token.clone(),
        ..ClientOptions::default()
    };
    let manager = SyncManager::open(store.clone(), opts).await?;
    manager.set_tombstone_min_age(std::time::Duration::from_secs(
        args.tombstone_min_age_seconds,
    ));
    manager.feed().set_max_waiting(args.max_waiting);
    manager.start_scheduler();
    let app = rag_sync::node::app(manager.clone(), token.map(Arc::from));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        node_id = %store.node_id(),
        incarnation = store.incarnation(),
        "rag-node ready"
    );
    axum::serve(listener.tap_io(rag_sync::node::nodelay), app)
        .with_graceful_shutdown({
            let manager = manager.clone();
            async move {
                rag_sync::shutdown::signal().await;
                // Waiting requests answer now, so that the graceful stop does not wait them out.
                manager.shutdown();
            }
        })
        .await?;
    manager.shutdown();
    tracing::info!("rag-node stopped");
    Ok(())
}
