//! `rag-node`: the reference RAG node (SQLite store, data/sync/admin APIs, scheduler).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use rag_sync::auth::{Access, Token};
use rag_sync::hlc::{HlcClock, SkewedClock};
use rag_sync::logging::LogFormat;
use rag_sync::store::{SqliteStore, Store};
use rag_sync::sync::client::ClientOptions;
use rag_sync::sync::SyncManager;
use rag_sync::tls::TlsFiles;

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
    /// File holding the sync token (one per line; the first is sent to peers, all are
    /// accepted). Re-read when it changes. Overrides RAG_SYNC_TOKEN.
    #[arg(long, env = "RAG_NODE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// File holding the admin token, which alone opens `/admin/*` once set. Re-read when it
    /// changes.
    #[arg(long, env = "RAG_NODE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Serving certificate (PEM chain); with --tls-key-file the node speaks only HTTPS and
    /// presents this certificate to peers that ask for one. Re-read when it changes.
    #[arg(long, env = "RAG_NODE_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file.
    #[arg(long, env = "RAG_NODE_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Mutual TLS: every request but the probes needs a client certificate from this CA.
    #[arg(long, env = "RAG_NODE_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    tls_client_ca_file: Option<PathBuf>,
    /// CA (PEM) that peers' certificates are verified against, besides the system's roots.
    #[arg(long, env = "RAG_NODE_PEER_CA_FILE")]
    peer_ca_file: Option<PathBuf>,
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

fn access(args: &Args) -> anyhow::Result<Access> {
    let sync = match &args.token_file {
        Some(f) => Some(Token::from_file("sync token", f.clone()).map_err(anyhow::Error::msg)?),
        None => match std::env::var("RAG_SYNC_TOKEN") {
            Ok(t) => Some(Token::fixed(&t).map_err(|e| anyhow::anyhow!("RAG_SYNC_TOKEN: {e}"))?),
            Err(_) => None,
        },
    };
    let admin = match &args.admin_token_file {
        Some(f) => Some(Token::from_file("admin token", f.clone()).map_err(anyhow::Error::msg)?),
        None => None,
    };
    // An admin token alone would leave peers nothing to send, or /sync/* (every document) open.
    if admin.is_some() && sync.is_none() {
        anyhow::bail!(
            "--admin-token-file needs a sync token too (--token-file or RAG_SYNC_TOKEN): \
             peers authenticate with it, and without one /sync/* would serve every document \
             to anyone"
        );
    }
    Ok(Access {
        sync,
        admin,
        client_certificates: args.tls_client_ca_file.is_some(),
    })
}

fn tls_files(args: &Args) -> TlsFiles {
    TlsFiles {
        cert: args.tls_cert_file.clone().zip(args.tls_key_file.clone()),
        client_ca: args.tls_client_ca_file.clone(),
        peer_ca: args.peer_ca_file.clone(),
    }
}

/// Exits 1 with the error on stderr (written without panicking if stderr is unwritable).
fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "rag-node: error: {e:#}");
    std::process::ExitCode::FAILURE
}

async fn run(args: Args) -> anyhow::Result<()> {
    rag_sync::logging::init(args.log_format, "info");
    let access = access(&args)?;
    let tls = tls_files(&args);
    let (server_tls, client_tls) = tls.configs().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let clock = HlcClock::new(SkewedClock(args.clock_offset_ms), args.max_clock_drift_ms);
    let store = SqliteStore::open(args.data_dir.join("rag.db"), args.node_id, clock)
        .context("opening the store")?;
    let store: Arc<dyn Store> = Arc::new(store);
    let opts = ClientOptions {
        token: access.sync.clone(),
        tls: client_tls,
        ..ClientOptions::default()
    };
    let manager = SyncManager::open(store.clone(), opts).await?;
    manager.set_tombstone_min_age(std::time::Duration::from_secs(
        args.tombstone_min_age_seconds,
    ));
    manager.feed().set_max_waiting(args.max_waiting);
    manager.start_scheduler();
    let https = server_tls.is_some();
    let app = rag_sync::node::app(manager.clone(), access);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        node_id = %store.node_id(),
        incarnation = store.incarnation(),
        https,
        "rag-node ready"
    );
    let shutdown = {
        let manager = manager.clone();
        async move {
            rag_sync::shutdown::signal().await;
            // Waiting requests answer now, so that the graceful stop does not wait them out.
            manager.shutdown();
        }
    };
    rag_sync::node::serve::serve(listener, server_tls, app, shutdown).await?;
    manager.shutdown();
    tracing::info!("rag-node stopped");
    Ok(())
}
