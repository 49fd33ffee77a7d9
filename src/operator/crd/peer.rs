//! The `SyncPeer` resource: which nodes take part in sync, and their observed state.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schemas;
use crate::config;

/// Port of a node's sync server when a selector-based `SyncPeer` does not name one.
pub const DEFAULT_NODE_PORT: u16 = 8090;

/// A set of RAG nodes that take part in sync: the in-cluster pods matched by `selector`, each
/// one a member, or exactly one external node at `endpoint`.
// Printer columns repeat `type_ = "integer"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ragsync.io",
    version = "v1alpha1",
    kind = "SyncPeer",
    plural = "syncpeers",
    namespaced,
    status = "SyncPeerStatus",
    derive = "PartialEq",
    shortname = "speer",
    category = "ragsync",
    doc = "A set of RAG nodes taking part in sync: in-cluster pods selected by labels, or one external node.",
    printcolumn(
        name = "Members",
        type_ = "integer",
        json_path = ".status.memberCount",
        description = "Members (pods or the external node) of this peer"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyMembers",
        description = "Members that answered their last status and sync"
    ),
    printcolumn(
        name = "Watermark",
        type_ = "string",
        json_path = ".status.watermark",
        description = "Highest change-log head (HLC) among the members"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.lagSeconds",
        description = "Seconds: age of the oldest change not yet received (max over members)"
    ),
    printcolumn(
        name = "Conflicts",
        type_ = "integer",
        json_path = ".status.conflicts",
        description = "Conflicts recorded by the members"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "The Ready condition"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.selector) != has(self.endpoint)").message(
        "set exactly one of spec.selector (in-cluster RAG pods) or spec.endpoint (one external node)",
    ),
    validation = Rule::new("!has(self.port) || has(self.selector)").message(
        "spec.port applies only with spec.selector; for an external node put the port into spec.endpoint (e.g. https://rag.example.com:8090)",
    ),
    validation = Rule::new("!has(self.selector) || (has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)").message(
        "spec.selector must have matchLabels or matchExpressions; an empty selector would select every pod in the namespace",
    )
)]
pub struct SyncPeerSpec {
    /// Selects the in-cluster RAG pods (in this namespace) that are members of this peer.
    /// Exactly one of `selector` and `endpoint` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schemas::label_selector")]
    pub selector: Option<LabelSelector>,
    /// Port of the selected pods' sync server (default 8090). Only with `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Base URL of one external node's sync server, e.g. `https://rag.us.example.com:8090`.
    /// The operator never configures it; members reach it by pulling and pushing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != '' && !self.contains('?') && !self.contains('#')").message(
        "spec.endpoint must be an absolute http:// or https:// URL with a host and no query or fragment, e.g. https://rag.example.com:8090",
    ))]
    pub endpoint: Option<String>,
    /// Collections this peer exchanges; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schemas::collection_list")]
    pub collections: Vec<String>,
    /// How the other members exchange changes with this peer: `Pull` (they pull from it),
    /// `Push` (they push to it) or `Both`.
    #[serde(default)]
    pub direction: PeerDirection,
}

impl SyncPeerSpec {
    /// The port to reach selected pods on.
    pub fn effective_port(&self) -> u16 {
        self.port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .unwrap_or(DEFAULT_NODE_PORT)
    }

    /// True when this peer is one external node rather than in-cluster pods.
    pub fn is_external(&self) -> bool {
        self.endpoint.is_some()
    }
}

/// How the other members of a policy exchange changes with a `SyncPeer`'s members.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum PeerDirection {
    /// The others pull from this peer (it is a source).
    Pull,
    /// The others push to this peer (it is a sink).
    Push,
    /// Both ways.
    #[default]
    Both,
}

impl PeerDirection {
    /// The node-side direction a member uses towards a peer with this `direction`.
    pub fn to_config(self) -> config::Direction {
        match self {
            PeerDirection::Pull => config::Direction::Pull,
            PeerDirection::Push => config::Direction::Push,
            PeerDirection::Both => config::Direction::Both,
        }
    }

    /// Others pull changes from this peer.
    pub fn is_pulled_from(self) -> bool {
        matches!(self, PeerDirection::Pull | PeerDirection::Both)
    }

    /// Others push changes to this peer.
    pub fn is_pushed_to(self) -> bool {
        matches!(self, PeerDirection::Push | PeerDirection::Both)
    }
}

/// Observed state of a `SyncPeer`, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPeerStatus {
    /// The members in the worst state, at most 50 (all of them when there are no more):
    /// not ready first, then with an error, then by lag. `memberCount` counts them all.
    #[serde(default)]
    #[schemars(length(max = 50))]
    pub members: Vec<MemberStatus>,
    /// Number of members (for the printer column; `members` is the detail).
    #[serde(default)]
    pub member_count: i32,
    /// Members left out of `members` (beyond the 50 shown).
    #[serde(default)]
    pub omitted_members: i32,
    /// Members that answered their last status and sync without error.
    #[serde(default)]
    pub ready_members: i32,
    /// Highest change-log head (HLC, hex) among the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// Largest member lag in seconds.
    #[serde(default)]
    pub lag_seconds: i64,
    /// Sum of the members' conflicts.
    #[serde(default)]
    pub conflicts: i64,
    /// The `SyncPolicy` that selected this peer. A peer selected by two policies is `Degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `Ready`, `Synced` and `Degraded`.
    #[serde(default)]
    #[schemars(schema_with = "schemas::conditions")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Sync state of one member of a `SyncPeer`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name; for an external node, the `SyncPeer` name.
    pub pod: String,
    /// The node id the member reports (4 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// URL the operator and the other members reach this member at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The member answered its last status and sync without error.
    #[serde(default)]
    pub ready: bool,
    /// Head of the member's change log (HLC, hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// Age in seconds of the oldest change this member has not yet received (0 when none).
    #[serde(default)]
    pub lag_seconds: i64,
    /// Changes other members hold that this member has not yet received.
    #[serde(default)]
    pub pending_changes: i64,
    /// Conflicts this member recorded.
    #[serde(default)]
    pub conflicts: i64,
    /// When this member last finished a sync round without error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schemas::date_time")]
    pub last_sync_time: Option<Time>,
    /// The member's last sync or status error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
