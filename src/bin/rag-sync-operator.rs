//! `rag-sync-operator`: reconciles SyncPeer and SyncPolicy resources into live sync topology.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use clap::Parser;
use rag_sync::logging::LogFormat;
use rag_sync::operator::controller;
use rag_sync::operator::leader::{self, LeaseConfig};
use rag_sync::operator::metrics::OperatorMetrics;

/// Manages the sync topology of RAG nodes from SyncPeer and SyncPolicy resources.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, default_value = "0.0.0.0:8080", env = "RAG_SYNC_METRICS_ADDR")]
    metrics_addr: std::net::SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "RAG_SYNC_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "rag-sync-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease is valid without renewal; a standby takes over after this.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    #[arg(long, value_enum, default_value = "text", env = "RAG_SYNC_LOG_FORMAT")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rag_sync::logging::init(args.log_format, "info,kube=warn");
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "operator".into()),
            std::process::id()
        )
    });
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(OperatorMetrics::new());

    let m = metrics.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move { m.encode() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, identity = %identity, "operator starting");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let lease = LeaseConfig {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        duration: Duration::from_secs(args.lease_duration_seconds.max(2)),
        retry: Duration::from_secs((args.lease_duration_seconds / 3).max(1)),
    };
    let stopping = rag_sync::shutdown::signal();
    tokio::pin!(stopping);
    tokio::select! {
        _ = leader::acquire(&client, &lease) => {}
        _ = &mut stopping => {
            tracing::info!("stopped while standing by");
            return Ok(());
        }
    }
    metrics.leader.set(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(controller::run(
        client.clone(),
        args.namespace.clone(),
        identity,
        metrics.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let lost = tokio::select! {
        _ = leader::hold(&client, &lease) => true,
        _ = &mut stopping => false,
    };
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    metrics.leader.set(0);
    if lost {
        // Never keep acting without the lease: exit and let the Deployment restart us.
        anyhow::bail!("lost the leader lease");
    }
    leader::release(&client, &lease).await;
    tracing::info!("operator stopped");
    Ok(())
}
