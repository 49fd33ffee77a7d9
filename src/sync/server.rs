//! The sync endpoints as an axum [`Router`] that any axum app can merge. Authentication,
//! compression and tracing are layered by the app around it (see [`crate::node`]).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::http::{Json, Query};
use crate::model::validate_name;
use crate::store::ApplyMode;
use crate::sync::embedding::local_collections;
use crate::sync::SyncManager;
use crate::wire::page::PAGE_ZSTD_LEVEL;
use crate::wire::query::ChangesParams;
use crate::wire::{
    ChangesQuery, CollectionsResponse, ConflictsResponse, PageWriter, PushRequest, PushResponse,
    WatermarkResponse, HAS_MORE_HEADER, MAX_PAGE, WATERMARK_HEADER,
};

/// Largest `POST /sync/changes` body (after decompression).
pub const MAX_PUSH_BODY: usize = 64 * 1024 * 1024;

/// The sync router: `/sync/watermark`, `/sync/changes` (GET and POST), `/sync/conflicts`,
/// `/sync/collections`.
pub fn router(manager: Arc<SyncManager>) -> Router {
    Router::new()
        .route("/sync/watermark", get(watermark))
        .route("/sync/changes", get(changes).post(push))
        .route("/sync/conflicts", get(conflicts))
        .route("/sync/collections", get(collections))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BODY))
        // Pushes arrive zstd-compressed from rag-sync clients; this router decodes them
        // whatever layers the embedding app adds (an outer decoder leaves nothing to do).
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
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

/// Whether an `Accept-Encoding` header admits `coding` (present, and not with `q=0`).
fn accepts(headers: &axum::http::HeaderMap, coding: &str) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case(coding))
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
}

/// `GET /sync/changes`. The store writes the page as JSON (for SQLite, the stored records
/// copied through), compressed with zstd as it is written when the client accepts zstd: off
/// the async workers, never held uncompressed, and sent in one piece with a `Content-Length`.
/// One piece matters: a stream of compressed chunks ends in a small segment that can wait for
/// a delayed ACK (about 40 ms per page on Linux unless the listener sets `TCP_NODELAY`).
/// Other clients get the plain body, which the app's compression layer encodes as they ask.
///
/// With `wait`, a request that finds nothing after `since` is held (costing no CPU) until a
/// commit gives it something, its wait ends, or the node stops; then it answers as without.
async fn changes(
    State(m): State<Arc<SyncManager>>,
    headers: axum::http::HeaderMap,
    Query(params): Query<ChangesParams>,
) -> Result<Response> {
    let ChangesQuery {
        since,
        limit,
        filter,
        wait,
    } = ChangesQuery::parse(params)?;
    let zstd = accepts(&headers, "zstd");
    let feed = m.feed();
    let waiting = match wait {
        Some(w) => Some((feed.enter()?, tokio::time::Instant::now() + w)),
        None => None,
    };
    let mut commits = m.store().commits();
    let (out, page) = loop {
        // Marked seen before the read: a commit after it wakes the wait below.
        commits.borrow_and_update();
        let mut out = if zstd {
            PageWriter::zstd(PAGE_ZSTD_LEVEL)?
        } else {
            PageWriter::plain()
        };
        out.begin_changes()?;
        let (out, page) = m.store().write_changes(since, limit, &filter, out).await?;
        let Some((_, deadline)) = &waiting else {
            break (out, page);
        };
        if page.count > 0 || page.has_more || feed.is_stopping() {
            break (out, page);
        }
        // Nothing yet: hold the request until a commit, the deadline or the node's stop.
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { break (out, page) },
            _ = tokio::time::sleep_until(*deadline) => break (out, page),
            _ = feed.stopped() => break (out, page),
        }
        drop(out);
    };
    let mut out = out;
    out.end_page(page.watermark, page.has_more)?;
    m.metrics().served_changes(page.count);
    // Where the next page starts, also in headers: a client can request it before it has
    // decoded this one.
    let next = [
        (WATERMARK_HEADER, page.watermark.to_hex()),
        (HAS_MORE_HEADER, page.has_more.to_string()),
    ];
    if out.is_compressed() {
        return Ok((
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONTENT_ENCODING, "zstd"),
                (header::VARY, "accept-encoding"),
            ],
            next,
            out.finish()?,
        )
            .into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        next,
        out.finish()?,
    )
        .into_response())
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
) -> Result<Json<ConflictsResponse>> {
    if let Some(c) = &q.collection {
        validate_name(c).map_err(Error::BadRequest)?;
    }
    Ok(Json(ConflictsResponse {
        conflicts: m.store().conflicts(q.collection.as_deref(), None).await?,
    }))
}

async fn collections(State(m): State<Arc<SyncManager>>) -> Result<Json<CollectionsResponse>> {
    Ok(Json(CollectionsResponse {
        collections: local_collections(&**m.store()).await?,
    }))
}
