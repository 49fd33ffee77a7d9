//! The sync protocol: wire types, the server router, the HTTP client and the manager that
//! runs rounds against peers.

pub mod client;
pub mod manager;
pub mod metrics;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::model::{Change, EmbeddingSettings, NodeId};
use crate::store::ConflictReport;

pub use client::HttpSyncPeer;
pub use manager::{PeerRoundStats, SyncManager};

/// Largest page a pull may ask for; larger `limit`s are clamped to it.
pub const MAX_PAGE: usize = 10_000;

/// `GET /sync/watermark`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkResponse {
    /// Head of the change log: the cursor of the latest commit.
    pub hlc: Hlc,
    pub node_id: NodeId,
    pub incarnation: String,
}

/// Response header of `GET /sync/changes` with the page's `watermark` (hex), so that a
/// client can ask for the next page while it is still decoding this one.
pub const WATERMARK_HEADER: &str = "rag-sync-watermark";
/// Response header of `GET /sync/changes` with the page's `has_more` (`true` or `false`).
pub const HAS_MORE_HEADER: &str = "rag-sync-has-more";

/// `GET /sync/changes` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangesResponse {
    pub changes: Vec<Change>,
    pub watermark: Hlc,
    pub has_more: bool,
}

/// `POST /sync/changes` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    pub changes: Vec<Change>,
    pub source_watermark: Hlc,
}

/// `POST /sync/changes` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    pub accepted: bool,
    pub conflicts: Vec<ConflictReport>,
    pub new_watermark: Hlc,
}

/// `GET /sync/collections`: what a peer needs to refuse mixing embedding models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionSummary {
    pub name: String,
    pub embedding: EmbeddingSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionsResponse {
    pub collections: Vec<CollectionSummary>,
}

/// Collections whose embedding models differ between two nodes, with a message each.
pub fn embedding_mismatches(
    local: &[CollectionSummary],
    remote: &[CollectionSummary],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for l in local {
        if let Some(r) = remote.iter().find(|r| r.name == l.name) {
            let (a, b) = (&l.embedding, &r.embedding);
            let model_differs = matches!((&a.model, &b.model), (Some(x), Some(y)) if x != y);
            let dims_differ = matches!((a.dimensions, b.dimensions), (Some(x), Some(y)) if x != y);
            if model_differs || dims_differ {
                out.push((
                    l.name.clone(),
                    format!(
                        "collection '{}' uses embedding model {:?} ({:?} dims) here but {:?} ({:?} dims) on the peer; its sync with this peer is stopped until the settings agree",
                        l.name, a.model, a.dimensions, b.model, b.dimensions
                    ),
                ));
            }
        }
    }
    out
}
