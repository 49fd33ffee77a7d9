//! Bodies of the admin API (`/admin/*`): what a node reports about itself and its peers, and
//! what the operator reads to compute lag and conditions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Direction;
use crate::hlc::Hlc;
use crate::model::NodeId;

/// `GET /admin/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub incarnation: String,
    /// Head of this node's change log.
    pub watermark: Hlc,
    /// Per origin node, the highest HLC of its writes applied here (for the GC horizon).
    #[schema(schema_with = crate::wire::schema::applied)]
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
    /// Nodes that pull from this one, each with what it has not pulled yet (absent from nodes
    /// before it existed). Together with each peer's `push_backlog`, a node's status answers
    /// the lag of every edge it serves, so lag needs one call per node.
    #[serde(default)]
    pub pullers: Vec<PullerStatus>,
    /// SHA-256 (hex) of this node's config as `GET /admin/config` serialises it, so a caller
    /// can tell whether its desired config is in place without fetching it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
}

/// A node that pulls from this one, as its latest pull request named it (`exclude_origin`,
/// the puller's own node id). Kept in memory: after a restart a puller shows up again with
/// its next request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullerStatus {
    pub node_id: NodeId,
    /// The `since` of its latest pull: its checkpoint in this node's log.
    pub since: Hlc,
    /// The collections it asked for (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<String>,
    /// When that request arrived (this node's wall clock, ms).
    pub last_seen_ms: u64,
    /// Entries in this node's log after `since`, in those collections.
    pub backlog: Backlog,
}

/// What a node knows about one peer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PeerStatus {
    pub peer_id: String,
    pub endpoint: String,
    /// The address the endpoint's host name stands for (`PeerConfig::address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub address: Option<std::net::IpAddr>,
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
    /// For a peer this node pushes to: the entries of this node's log after
    /// `push_checkpoint` in the peer's collections (absent when it pushes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_backlog: Option<Backlog>,
}

/// Result of one round with one peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncNowResponse {
    pub peers: Vec<PeerRoundStats>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Probe {
    #[schema(value_type = String)]
    pub status: &'static str,
}

/// `GET /admin/backlog`: how much of the log lies after a cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Backlog {
    pub pending: u64,
    pub oldest: Option<Hlc>,
}
