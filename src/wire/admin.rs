//! Bodies of the admin API (`/admin/*`): what a node reports about itself and its peers, and
//! what the operator reads to compute lag and conditions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Direction;
use crate::hlc::Hlc;
use crate::model::NodeId;

/// `GET /admin/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub incarnation: String,
    /// Head of this node's change log.
    pub watermark: Hlc,
    /// Per origin node, the highest HLC of its writes applied here (for the GC horizon).
    pub applied: BTreeMap<NodeId, Hlc>,
    pub gc_horizon: Option<Hlc>,
    pub documents: u64,
    pub tombstones: u64,
    pub conflicts: u64,
    /// Old versions in the log waiting to be deleted (space the store will reclaim).
    #[serde(default)]
    pub superseded: u64,
    /// Commits not yet copied from the write-ahead log into the database file.
    #[serde(default)]
    pub checkpoint_pending: bool,
    pub wall_ms: u64,
    pub max_clock_drift_ms: u64,
    pub peers: Vec<PeerStatus>,
}

/// What a node knows about one peer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    pub peer_id: String,
    pub endpoint: String,
    pub direction: Direction,
    pub collections: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_collections: Vec<String>,
    pub node_id: Option<NodeId>,
    pub incarnation: Option<String>,
    /// Position in the peer's log up to which this node has applied (pull).
    pub checkpoint: Option<Hlc>,
    /// Position in this node's log the peer has accepted (push).
    pub push_checkpoint: Option<Hlc>,
    /// The peer's log head at the last round.
    pub peer_watermark: Option<Hlc>,
    pub last_success_ms: Option<u64>,
    /// Last successful round that moved changes (or the first success): when data last
    /// flowed. Quiet rounds leave it alone, so a quiet cluster reports still times.
    #[serde(default)]
    pub last_transfer_ms: Option<u64>,
    pub last_attempt_ms: Option<u64>,
    pub last_error: Option<String>,
    /// The error code of `last_error` (as in the error bodies: `clock_drift`,
    /// `embedding_mismatch`, `peer_unreachable`, ...); absent from nodes before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<String>,
    pub pulled_total: u64,
    pub pushed_total: u64,
    pub conflicts_total: u64,
    /// Collections whose sync with this peer is stopped (embedding settings disagree).
    pub blocked_collections: Vec<String>,
}

/// Result of one round with one peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerRoundStats {
    pub peer_id: String,
    /// Remote changes that altered local state.
    pub pulled: u64,
    /// Local changes sent to the peer.
    pub pushed: u64,
    pub conflicts: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// The error code of `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// `POST /admin/sync`: the round with each peer it ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncNowResponse {
    pub peers: Vec<PeerRoundStats>,
}

/// `GET /admin/backlog`: how much of the log lies after a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    pub pending: u64,
    pub oldest: Option<Hlc>,
}
