//! The admin API the operator drives, plus probes and metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::config::SyncConfig;
use crate::error::{Error, Result};
use crate::http::{Json, Query};
use crate::node::NodeState;
use crate::wire::admin::Probe;
use crate::wire::query::BacklogParams;
use crate::wire::{Backlog, BacklogQuery, NodeStatus, PullerStatus, SyncNowResponse};

pub fn routes() -> Router<NodeState> {
    Router::new()
        .route("/admin/config", get(get_config).put(put_config))
        .route("/admin/sync", post(sync_now))
        .route("/admin/status", get(status))
        .route("/admin/backlog", get(backlog))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The sync configuration the node runs with.
#[utoipa::path(get, path = "/admin/config", tag = "admin",
    responses((status = 200, description = "The configuration.", body = SyncConfig)))]
pub async fn get_config(State(s): State<NodeState>) -> Json<SyncConfig> {
    Json(s.manager.config())
}

/// Replaces the sync configuration (peers, interval, batch size, conflict strategy); takes
/// effect at once.
#[utoipa::path(put, path = "/admin/config", tag = "admin", request_body = SyncConfig,
    responses(
        (status = 200, description = "The configuration now in force.", body = SyncConfig),
        (status = 400, description = "A field out of range, or an invalid body.", body = crate::error::ErrorBody)))]
pub async fn put_config(
    State(s): State<NodeState>,
    Json(cfg): Json<SyncConfig>,
) -> Result<Json<SyncConfig>> {
    Ok(Json(s.manager.set_config(cfg).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// Only this peer (its `peer_id`); default every peer.
    peer: Option<String>,
}

/// Runs a sync round with each peer now and reports it.
#[utoipa::path(post, path = "/admin/sync", tag = "admin", params(SyncQuery),
    responses(
        (status = 200, description = "The round with each peer.", body = SyncNowResponse),
        (status = 404, description = "No such peer.", body = crate::error::ErrorBody)))]
pub async fn sync_now(
    State(s): State<NodeState>,
    Query(q): Query<SyncQuery>,
) -> Result<Json<SyncNowResponse>> {
    let peers = match q.peer {
        Some(p) => vec![s.manager.sync_with(&p).await?],
        None => s.manager.sync_all().await,
    };
    Ok(Json(SyncNowResponse { peers }))
}

/// What the node knows about itself, its peers and the nodes that pull from it.
#[utoipa::path(get, path = "/admin/status", tag = "admin",
    responses((status = 200, description = "The node's status.", body = NodeStatus)))]
pub async fn status(State(s): State<NodeState>) -> Result<Json<NodeStatus>> {
    let store = &s.store;
    // Read together, not one after another (see `SyncManager::peer_statuses`).
    let (stats, watermark, applied, peers, pullers) = tokio::try_join!(
        store.stats(),
        store.head(),
        store.applied_origins(),
        s.manager.peer_statuses(),
        pullers(&s),
    )?;
    Ok(Json(NodeStatus {
        node_id: store.node_id(),
        incarnation: store.incarnation().to_string(),
        watermark,
        applied,
        gc_horizon: s.manager.config().gc_horizon,
        documents: stats.documents,
        tombstones: stats.tombstones,
        conflicts: stats.conflicts,
        superseded: stats.superseded,
        checkpoint_pending: stats.checkpoint_pending,
        wall_ms: store.clock().wall_ms(),
        max_clock_drift_ms: store.clock().max_drift_ms(),
        peers,
        pullers,
        config_digest: Some(s.manager.config().digest()),
    }))
}

/// Each puller's position and what lies after it.
async fn pullers(s: &NodeState) -> Result<Vec<PullerStatus>> {
    let status = |(node_id, p): (_, crate::sync::pullers::Puller)| async move {
        Ok::<_, Error>(PullerStatus {
            node_id,
            since: p.since,
            backlog: crate::sync::pullers::backlog(&*s.store, p.since, &p.filter, &p.quiet).await?,
            collections: p.filter.collections,
            last_seen_ms: p.last_seen_ms,
        })
    };
    futures::future::try_join_all(s.manager.pullers().list().into_iter().map(status)).await
}

/// How much of the log lies after a cursor.
#[utoipa::path(get, path = "/admin/backlog", tag = "admin", params(crate::wire::query::BacklogParams),
    responses(
        (status = 200, description = "The backlog.", body = Backlog),
        (status = 400, description = "An invalid parameter.", body = crate::error::ErrorBody)))]
pub async fn backlog(
    State(s): State<NodeState>,
    Query(params): Query<BacklogParams>,
) -> Result<Json<Backlog>> {
    let q = BacklogQuery::parse(params)?;
    Ok(Json(s.store.backlog(q.since, &q.collections).await?))
}

/// Liveness: the process serves requests. Needs no token.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(),
    responses((status = 200, description = "Alive.", body = Probe)))]
pub async fn healthz() -> Json<Probe> {
    Json(Probe { status: "ok" })
}

/// Ready when the store reads and its writes can succeed: a node on a full disk is taken out
/// of rotation (and its peers' and the operator's view) until space returns.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(),
    responses(
        (status = 200, description = "Ready.", body = Probe),
        (status = 503, description = "Not ready: the store cannot be read, or its writes fail (e.g. a full disk).", body = crate::error::ErrorBody)))]
pub async fn readyz(State(s): State<NodeState>) -> Result<Json<Probe>> {
    s.store
        .head()
        .await
        .map_err(|e| Error::Unavailable(format!("store not ready: {e}")))?;
    if let Some(why) = s.store.writes_failing() {
        return Err(Error::Unavailable(format!("not ready: {why}")));
    }
    Ok(Json(Probe { status: "ready" }))
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "admin",
    responses((status = 200, description = "The metrics.", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(s): State<NodeState>) -> Result<impl IntoResponse> {
    let m = s.manager.metrics();
    let store = &s.store;
    let stats = store.stats().await?;
    m.documents.set(stats.documents as i64);
    m.waiting.set(s.manager.feed().waiting() as i64);
    m.tombstones.set(stats.tombstones as i64);
    m.retained_conflicts.set(stats.conflicts as i64);
    m.head_wall_ms.set(store.head().await?.wall_ms() as i64);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    ))
}
