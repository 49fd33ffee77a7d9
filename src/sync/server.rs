//! The sync endpoints as an axum [`Router`] that any axum app can merge. Authentication,
//! compression and tracing are layered by the app around it (see [`crate::node`]).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use utoipa::IntoParams;

use std::time::Duration;

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::http::{Json, Query};
use crate::model::{validate_name, NodeId};
use crate::store::ApplyMode;
use crate::sync::embedding::local_collections;
use crate::sync::SyncManager;
use crate::wire::page::PAGE_ZSTD_LEVEL;
use crate::wire::query::ChangesParams;
use crate::wire::{
    ChangeFilter, ChangesQuery, CollectionsResponse, ConflictsResponse, PageWriter, PushRequest,
    PushResponse, WatermarkResponse, HAS_MORE_HEADER, MAX_PAGE, WATERMARK_HEADER,
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

/// The head of this node's change log and its identity.
#[utoipa::path(get, path = "/sync/watermark", tag = "sync",
    responses((status = 200, description = "The watermark.", body = WatermarkResponse)))]
pub async fn watermark(State(m): State<Arc<SyncManager>>) -> Result<Json<WatermarkResponse>> {
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
/// Changes written by a node in `quiet` do not end the wait.
#[utoipa::path(get, path = "/sync/changes", tag = "sync", params(ChangesParams),
    responses(
        (status = 200, description = "A page of the change log (zstd-encoded when the client accepts it).", body = crate::wire::ChangesPage,
            headers(
                ("rag-sync-watermark" = Hlc, description = "The page's `watermark`: where the next page starts."),
                ("rag-sync-has-more" = bool, description = "The page's `has_more`."))),
        (status = 400, description = "An invalid parameter.", body = crate::error::ErrorBody),
        (status = 409, description = "The store is another incarnation than `incarnation` names.", body = crate::error::ErrorBody),
        (status = 429, description = "The node holds as many waiting requests as it allows.", body = crate::error::ErrorBody)))]
pub async fn changes(
    State(m): State<Arc<SyncManager>>,
    headers: axum::http::HeaderMap,
    Query(params): Query<ChangesParams>,
) -> Result<Response> {
    let ChangesQuery {
        since,
        limit,
        filter,
        wait,
        quiet,
        incarnation,
    } = ChangesQuery::parse(params)?;
    if let Some(i) = incarnation.filter(|i| i != m.store().incarnation()) {
        return Err(Error::Conflict(format!(
            "this store is incarnation {}, not {i}: resume from its watermark",
            m.store().incarnation()
        )));
    }
    if let Some(puller) = filter.exclude_origin {
        let now = m.store().clock().wall_ms();
        let waits = wait.is_some().then_some(quiet.as_slice());
        m.pullers().seen(puller, since, &filter, waits, now);
    }
    let zstd = accepts(&headers, "zstd");
    if let Some(wait) = wait {
        let _waiting = m.feed().enter()?;
        hold(&m, since, &filter, &quiet, wait).await?;
    }
    let mut out = if zstd {
        PageWriter::zstd_above_min(PAGE_ZSTD_LEVEL)
    } else {
        PageWriter::plain()
    };
    out.begin_changes()?;
    let (mut out, page) = m.store().write_changes(since, limit, &filter, out).await?;
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

/// Rows a waiting request reads per look at the log.
const PROBE_ROWS: usize = 256;

/// Returns once a change after `since` that `filter` admits and no node in `quiet` wrote
/// was committed, or at the deadline, or when the node stops. Each look at the log reads
/// only what was committed since the last one, and a commit whose writers are all quiet is
/// not looked at (it is read with the next): a waiting request costs nothing between commits
/// it does not want. What it skipped moves the puller's position in [`SyncManager::pullers`].
async fn hold(
    m: &SyncManager,
    since: Hlc,
    filter: &ChangeFilter,
    quiet: &[NodeId],
    wait: Duration,
) -> Result<()> {
    let feed = m.feed();
    let deadline = tokio::time::Instant::now() + wait;
    let mut commits = m.store().commits();
    let mut from = since;
    loop {
        // Marked seen before the read: a commit after it wakes the wait below.
        let mut seen = commits.borrow_and_update().seq;
        if feed.is_stopping() {
            return Ok(());
        }
        let page = m.store().changes_since(from, PROBE_ROWS, filter).await?;
        if page
            .changes
            .iter()
            .any(|c| !quiet.contains(&c.version.node))
        {
            tracing::trace!(puller = ?filter.exclude_origin, %since, %from, "wait ends: a change for it");
            return Ok(());
        }
        from = from.max(page.watermark);
        // Nothing up to `from` is for this puller: it stands there (for its lag in status).
        if let Some(puller) = filter.exclude_origin {
            m.pullers().advanced(puller, from);
        }
        if page.has_more {
            continue;
        }
        loop {
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return Ok(()) },
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                _ = feed.stopped() => return Ok(()),
            }
            let commit = commits.borrow_and_update();
            let unwanted = commit.seq == seen.wrapping_add(1)
                && commit
                    .writers
                    .as_ref()
                    .is_some_and(|w| w.iter().all(|n| quiet.contains(n)));
            if !unwanted {
                break;
            }
            tracing::trace!(puller = ?filter.exclude_origin, seq = commit.seq, "wait skips a commit of quiet writers");
            seen = commit.seq;
        }
    }
}

/// Applies changes a peer pushes, all or nothing.
#[utoipa::path(post, path = "/sync/changes", tag = "sync", request_body = PushRequest,
    responses(
        (status = 200, description = "Applied.", body = PushResponse),
        (status = 400, description = "A change whose version vector lacks its own write (`vv[node]` below `hlc`), whose collection settings break a rule the schema cannot state (see `PUT /collections/{name}`), or whose embedding's dimension differs from its collection's; or an invalid body.", body = crate::error::ErrorBody),
        (status = 409, description = "A change's embedding does not fit its collection's settings.", body = crate::error::ErrorBody),
        (status = 413, description = "More than 10000 changes, or a body over 64 MiB.", body = crate::error::ErrorBody),
        (status = 422, description = "A change from a clock further ahead of this node's than its drift limit.", body = crate::error::ErrorBody),
        (status = 507, description = "The disk is full.", body = crate::error::ErrorBody)))]
pub async fn push(
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConflictsQuery {
    /// Only this collection.
    #[param(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")]
    collection: Option<String>,
}

/// Every record's retained conflicts.
#[utoipa::path(get, path = "/sync/conflicts", tag = "sync", params(ConflictsQuery),
    responses((status = 200, description = "The conflicts.", body = ConflictsResponse)))]
pub async fn conflicts(
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

/// The collections and their embedding settings (what a peer checks before syncing).
#[utoipa::path(get, path = "/sync/collections", tag = "sync",
    responses((status = 200, description = "The collections.", body = CollectionsResponse)))]
pub async fn collections(State(m): State<Arc<SyncManager>>) -> Result<Json<CollectionsResponse>> {
    Ok(Json(CollectionsResponse {
        collections: local_collections(&**m.store()).await?,
    }))
}
