//! Bodies and headers of the sync API (`/sync/*`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::hlc::Hlc;
use crate::model::{Change, ConflictVersion, EmbeddingSettings, Kind, NodeId, Version};

/// Largest page a pull may ask for; larger `limit`s are clamped to it.
pub const MAX_PAGE: usize = 10_000;

/// Page size when a pull gives no `limit`.
pub const DEFAULT_PAGE: usize = 1000;

/// `GET /sync/watermark`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// `GET /sync/changes` response: one page of the change log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChangesPage {
    pub changes: Vec<Change>,
    /// Where the next page starts: the last entry read, or the head of the read snapshot.
    pub watermark: Hlc,
    pub has_more: bool,
}

/// `POST /sync/changes` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    pub changes: Vec<Change>,
    pub source_watermark: Hlc,
}

/// `POST /sync/changes` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushResponse {
    pub accepted: bool,
    pub conflicts: Vec<ConflictReport>,
    pub new_watermark: Hlc,
}

/// A conflict resolved while applying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConflictReport {
    pub collection: String,
    pub kind: Kind,
    pub id: String,
    pub winner: Version,
    pub loser_hlc: Hlc,
    pub loser_node: NodeId,
}

/// A record's retained conflicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConflictEntry {
    pub collection: String,
    pub kind: Kind,
    pub id: String,
    pub winner: Version,
    pub losers: Vec<ConflictVersion>,
}

/// `GET /sync/conflicts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConflictsResponse {
    pub conflicts: Vec<ConflictEntry>,
}

/// A collection and its embedding settings: what a peer needs to refuse mixing models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CollectionSummary {
    pub name: String,
    pub embedding: EmbeddingSettings,
}

/// `GET /sync/collections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CollectionsResponse {
    pub collections: Vec<CollectionSummary>,
}
