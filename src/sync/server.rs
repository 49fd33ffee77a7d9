//! The sync endpoints as an axum [`Router`] that any axum app can merge. Authentication,
//! compression and tracing are layered by the app around it (see [`crate::node`]).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::http::{Json, Query};
use crate::model::{validate_name, NodeId, Value};
use crate::store::{ApplyMode, ChangeFilter, ConflictEntry};
use crate::sync::{
    ChangesResponse, CollectionSummary, CollectionsResponse, PushRequest, PushResponse,
    SyncManager, WatermarkResponse, MAX_PAGE,
};

/// Largest `POST /sync/changes` body (after decompression).
pub const MAX_PUSH_BODY: usize = 64 * 1024 * 1024;
/// Default page size when `limit` is absent.
pub const DEFAULT_PAGE: usize = 1000;

/// The sync router: `/sync/watermark`, `/sync/changes` (GET and POST), `/sync/conflicts`,
/// `/sync/collections`.
pub fn router(manager: Arc<SyncManager>) -> Router {
    Router::new()
        .route("/sync/watermark", get(watermark))
        .route("/sync/changes", get(changes).post(push))
        .route("/sync/conflicts", get(conflicts))
        .route("/sync/collections", get(collections))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BODY))
        .route_layer(axum::middleware::from_fn(|req, next| {
            crate::http::limit_content_length(MAX_PUSH_BODY, req, next)
        }))
        .with_state(manager)
}

async fn watermark(State(m): State<Arc<SyncManager>>) -> Result<Json<WatermarkResponse>> {
    let store = m.store();
    Ok(Json(WatermarkResponse {
        hlc: store.head().await?,
        node_id: store.node_id(),
        incarnation: store.incarnation().to_string(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesQuery {
    since: Option<String>,
    limit: Option<String>,
    collections: Option<String>,
    exclude_collections: Option<String>,
    exclude_origin: Option<String>,
}

/// Parses a comma-separated list of collection names (empty means none).
pub fn parse_collections(param: Option<&str>, field: &str) -> Result<Vec<String>> {
    let Some(s) = param else {
        return Ok(Vec::new());
    };
    s.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            validate_name(c)
                .map(|_| c.to_string())
                .map_err(|e| Error::bad(format!("{field}: {e}")))
        })
        .collect()
}

/// Parses `limit`: a positive integer, clamped to `max`.
pub fn parse_limit(param: Option<&str>, default: usize, max: usize) -> Result<usize> {
    match param {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 1 => Ok((n as usize).min(max)),
            Ok(n) => Err(Error::bad(format!("limit must be at least 1, got {n}"))),
            Err(_) => Err(Error::bad(format!(
                "limit must be a positive integer, got '{s}'"
            ))),
        },
    }
}

pub fn parse_hlc(param: Option<&str>, field: &str) -> Result<Hlc> {
    match param {
        None => Ok(Hlc::ZERO),
        Some(s) => Hlc::from_hex(s).map_err(|e| Error::bad(format!("{field}: {e}"))),
    }
}

async fn changes(
    State(m): State<Arc<SyncManager>>,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<ChangesResponse>> {
    let since = parse_hlc(q.since.as_deref(), "since")?;
    let limit = parse_limit(q.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let filter = ChangeFilter {
        collections: parse_collections(q.collections.as_deref(), "collections")?,
        exclude_collections: parse_collections(
            q.exclude_collections.as_deref(),
            "exclude_collections",
        )?,
        exclude_origin: q
            .exclude_origin
            .as_deref()
            .map(|s| NodeId::from_hex(s).map_err(|e| Error::bad(format!("exclude_origin: {e}"))))
            .transpose()?,
    };
    let page = m.store().changes_since(since, limit, &filter).await?;
    m.metrics().served_changes(page.changes.len());
    Ok(Json(ChangesResponse {
        changes: page.changes,
        watermark: page.watermark,
        has_more: page.has_more,
    }))
}

async fn push(
    State(m): State<Arc<SyncManager>>,
    Json(req): Json<PushRequest>,
) -> Result<Json<PushResponse>> {
    if req.changes.len() > MAX_PAGE {
        return Err(Error::PayloadTooLarge(format!(
            "a push carries at most {MAX_PAGE} changes, got {}",
            req.changes.len()
        )));
    }
    let strategy = m.config().conflict_strategy;
    let report = m
        .store()
        .apply_changes(req.changes, strategy, ApplyMode::AllOrNothing, None)
        .await?;
    m.metrics()
        .applied_push(report.applied, report.conflicts.len());
    Ok(Json(PushResponse {
        accepted: true,
        conflicts: report.conflicts,
        new_watermark: m.store().head().await?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConflictsQuery {
    collection: Option<String>,
}

async fn conflicts(
    State(m): State<Arc<SyncManager>>,
    Query(q): Query<ConflictsQuery>,
) -> Result<Json<serde_json::Value>> {
    if let Some(c) = &q.collection {
        validate_name(c).map_err(Error::BadRequest)?;
    }
    let list: Vec<ConflictEntry> = m.store().conflicts(q.collection.as_deref(), None).await?;
    Ok(Json(serde_json::json!({ "conflicts": list })))
}

async fn collections(State(m): State<Arc<SyncManager>>) -> Result<Json<CollectionsResponse>> {
    Ok(Json(CollectionsResponse {
        collections: local_collections(&m).await?,
    }))
}

/// This node's live collections and their embedding settings.
pub async fn local_collections(m: &SyncManager) -> Result<Vec<CollectionSummary>> {
    Ok(m.store()
        .list_collections()
        .await?
        .into_iter()
        .filter_map(|r| match r.value {
            Value::Collection { settings, .. } => Some(CollectionSummary {
                name: r.key.collection,
                embedding: settings.embedding,
            }),
            _ => None,
        })
        .collect())
}
