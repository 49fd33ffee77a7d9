//! The reference `rag-node`: a durable document store with the data API, the embedded sync
//! server and the admin API the operator drives, assembled into one axum app.

pub mod admin;
pub mod data;
pub mod openapi;
pub mod serve;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Access;
use crate::store::Store;
use crate::sync::SyncManager;

/// Largest data API body (one document with its embedding).
pub const MAX_DOCUMENT_BODY: usize = 8 * 1024 * 1024;

/// Compression level of response bodies (zstd, or gzip for clients without zstd). Level 1:
/// a sync page of 1 KiB documents compresses ~2.8x at ~300 MB/s, where zstd's default
/// level 3 gains 6 % in size for 1.6x the CPU, which made compression most of the cost of
/// serving a page.
pub const RESPONSE_COMPRESSION: tower_http::CompressionLevel =
    tower_http::CompressionLevel::Precise(1);

/// Responses smaller than this go uncompressed (as small change pages do, see
/// [`crate::wire::page::PAGE_ZSTD_MIN`]): setting up a compressor costs more than it saves.
pub const RESPONSE_COMPRESSION_MIN: u16 = crate::wire::page::PAGE_ZSTD_MIN as u16;

/// When the app compresses a response: tower-http's default rules with a larger minimum.
fn compress_when() -> impl tower_http::compression::Predicate {
    use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
    SizeAbove::new(RESPONSE_COMPRESSION_MIN)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
}

/// Disables Nagle's algorithm on an accepted connection; for
/// `axum::serve(listener.tap_io(rag_sync::node::nodelay), app)`. Without it, a response
/// written in several pieces (a compressed stream) can end in a small segment that waits for
/// the client's delayed ACK, about 40 ms on Linux, on every request of a keep-alive
/// connection. `GET /sync/changes` avoids this by sending each page in one piece.
pub fn nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Everything a handler needs: the store for data and status, the manager for sync.
#[derive(Clone)]
pub struct NodeState {
    pub store: Arc<dyn Store>,
    pub manager: Arc<SyncManager>,
}

/// The whole node app: data, sync and admin routes, probes and metrics, with the checks of
/// [`Access`] (tokens, client certificates), compression both ways and request tracing.
pub fn app(manager: Arc<SyncManager>, access: Access) -> Router {
    let access = Arc::new(access);
    let state = NodeState {
        store: manager.store().clone(),
        manager: manager.clone(),
    };
    let node_routes = data::routes()
        .layer(DefaultBodyLimit::max(MAX_DOCUMENT_BODY))
        .route_layer(axum::middleware::from_fn(|req, next| {
            crate::http::limit_content_length(MAX_DOCUMENT_BODY, req, next)
        }))
        .merge(admin::routes())
        .route("/openapi.json", axum::routing::get(openapi::openapi_json))
        .with_state(state);
    Router::new()
        .merge(node_routes)
        .merge(crate::sync::server::router(manager))
        .fallback(crate::http::not_found)
        .layer(axum::middleware::from_fn(move |req, next| {
            crate::auth::authorize(access.clone(), req, next)
        }))
        .layer(RequestDecompressionLayer::new())
        .layer(
            CompressionLayer::new()
                .quality(RESPONSE_COMPRESSION)
                .compress_when(compress_when()),
        )
        .layer(TraceLayer::new_for_http())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn nodelay_fits_tap_io() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _listener = axum::serve::ListenerExt::tap_io(listener, super::nodelay);
    }
}
