//! The `SyncPeer` and `SyncPolicy` custom resources (`ragsync.io/v1alpha1`).
//!
//! The Rust types are the single source of truth: `crdgen` prints the CRDs from them and a test
//! keeps `crds/ragsync.io.yaml` identical. Invalid specs are refused by the API server itself,
//! so every rule a user can break lives in the schema (bounds, patterns, CEL rules with a
//! message saying what to fix) rather than only in the controller.

use std::time;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::{Duration, Rule};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{self, ConflictStrategy};
use crate::hlc::Hlc;

/// API group of both resources.
pub const GROUP: &str = "ragsync.io";
/// API version of both resources.
pub const VERSION: &str = "v1alpha1";
/// Port of a node's sync server when a selector-based `SyncPeer` does not name one.
pub const DEFAULT_NODE_PORT: u16 = 8090;

/// Upper bound of `batchSize`, the same as what a node accepts.
pub const MAX_BATCH_SIZE: i32 = config::MAX_BATCH_SIZE as i32;

// ---------------------------------------------------------------------------------------------
// SyncPeer
// ---------------------------------------------------------------------------------------------

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
    /// One entry per member (pod, or the external node).
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// Number of members (for the printer column; `members` is the detail).
    #[serde(default)]
    pub member_count: i32,
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

// ---------------------------------------------------------------------------------------------
// SyncPolicy
// ---------------------------------------------------------------------------------------------

/// Who syncs with whom among the selected `SyncPeer`s, and how.
// Printer columns repeat `type_ = "integer"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ragsync.io",
    version = "v1alpha1",
    kind = "SyncPolicy",
    plural = "syncpolicies",
    namespaced,
    status = "SyncPolicyStatus",
    derive = "PartialEq",
    shortname = "spol",
    category = "ragsync",
    doc = "Who syncs with whom among the selected SyncPeers (the topology), and how.",
    printcolumn(
        name = "Topology",
        type_ = "string",
        json_path = ".spec.topology.type",
        description = "Mesh, HubAndSpoke, Ring or Explicit"
    ),
    printcolumn(
        name = "Members",
        type_ = "integer",
        json_path = ".status.members",
        description = "Members of all selected SyncPeers"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyMembers",
        description = "Members that answered their last status and sync"
    ),
    printcolumn(
        name = "MaxLag",
        type_ = "integer",
        json_path = ".status.maxLagSeconds",
        description = "Seconds: the largest lag over all edges"
    ),
    printcolumn(
        name = "Conflicts",
        type_ = "integer",
        json_path = ".status.conflicts",
        description = "Conflicts recorded by all members"
    ),
    printcolumn(
        name = "Converged",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Converged\")].status",
        description = "The Converged condition"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.conflictStrategy) || !(self.conflictStrategy in ['PreferLocal', 'PreferRemote']) || (has(self.topology) && has(self.topology.type) && self.topology.type in ['HubAndSpoke', 'Explicit'])").message(
    "conflictStrategy PreferLocal and PreferRemote cannot converge in a Mesh or Ring topology (each node keeps its own version); use LastWriterWins or Merge, or a HubAndSpoke or Explicit topology where one side is authoritative",
))]
pub struct SyncPolicySpec {
    /// Selects the `SyncPeer`s (in this namespace) this policy connects; `{}` selects all.
    #[schemars(schema_with = "schemas::label_selector")]
    pub peer_selector: LabelSelector,
    /// Who syncs with whom.
    #[serde(default)]
    pub topology: Topology,
    /// How often each node syncs with each of its peers, e.g. `30s` (1s to 24h).
    #[serde(default = "default_interval")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = duration_1s_to_24h())]
    pub interval: Duration,
    /// Changes per request (1 to 10000).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: i32,
    /// How concurrent updates are resolved. `PreferLocal` and `PreferRemote` need a topology
    /// with an authoritative side (`HubAndSpoke` or `Explicit`).
    #[serde(default)]
    #[schemars(schema_with = "schemas::conflict_strategy")]
    pub conflict_strategy: ConflictStrategy,
    /// Collections this policy syncs.
    #[serde(default)]
    pub collections: CollectionFilter,
    /// Stops syncing (node configs get no peers) without deleting anything.
    #[serde(default)]
    pub paused: bool,
    /// Secret key holding the bearer token the nodes require.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretKeyRef>,
    /// Largest accepted clock lead of a remote change, e.g. `500ms`.
    #[serde(default = "default_max_clock_drift")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = duration_at_least_0s())]
    pub max_clock_drift: Duration,
    /// How often the operator refreshes status, e.g. `15s` (1s to 24h).
    #[serde(default = "default_status_interval")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = duration_1s_to_24h())]
    pub status_interval: Duration,
}

fn default_interval() -> Duration {
    time::Duration::from_secs(30).into()
}
fn default_batch_size() -> i32 {
    1000
}
fn default_max_clock_drift() -> Duration {
    time::Duration::from_millis(500).into()
}
fn default_status_interval() -> Duration {
    time::Duration::from_secs(15).into()
}

/// The syntax check every duration rule starts with: one or more `<number><unit>` with units
/// ns, us, ms, s, m, h. CEL's `duration()` (Go's `time.ParseDuration`) alone would also take a
/// sign, a bare `0`, `µs` and `.5s`; with this check no accepted value is negative.
const DURATION_SYNTAX: &str = "self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')";

/// Rule on `interval` and `statusInterval`. The upper bound is what a node accepts
/// ([`config::MAX_INTERVAL_SECONDS`]), so a valid policy never yields a config nodes refuse.
fn duration_1s_to_24h() -> Rule {
    Rule::new(format!(
        "{DURATION_SYNTAX} && duration(self) >= duration('1s') && duration(self) <= duration('24h')"
    ))
    .message("must be a duration from 1s to 24h, such as 30s, 1m or 1m30s")
}

/// Rule on `maxClockDrift`.
fn duration_at_least_0s() -> Rule {
    Rule::new(format!(
        "{DURATION_SYNTAX} && duration(self) >= duration('0s')"
    ))
    .message("must be a duration such as 500ms, 2s or 1m")
}

// The duration rules admit no negative value, so converting to `std` drops no sign.
impl SyncPolicySpec {
    /// `interval`.
    pub fn interval(&self) -> time::Duration {
        self.interval.into()
    }

    /// `statusInterval`.
    pub fn status_interval(&self) -> time::Duration {
        self.status_interval.into()
    }

    /// `maxClockDrift`.
    pub fn max_clock_drift(&self) -> time::Duration {
        self.max_clock_drift.into()
    }

    /// The node config every member of this policy starts from (no peers yet): interval in
    /// whole seconds (rounded up), batch size, conflict strategy and GC horizon.
    pub fn base_config(&self, gc_horizon: Option<Hlc>) -> Result<config::SyncConfig, String> {
        let interval = self.interval();
        let secs = interval.as_secs() + u64::from(interval.subsec_nanos() > 0);
        let c = config::SyncConfig {
            peers: Vec::new(),
            interval_seconds: secs.max(1),
            batch_size: usize::try_from(self.batch_size)
                .map_err(|_| format!("spec.batchSize: {} is out of range", self.batch_size))?,
            conflict_strategy: self.conflict_strategy,
            gc_horizon,
        };
        c.validate()?;
        Ok(c)
    }
}

/// The topology: which members exchange changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.type) || self.type != 'HubAndSpoke' || (has(self.hubs) && size(self.hubs) > 0)").message(
        "topology.hubs must name at least one SyncPeer when topology.type is HubAndSpoke",
    ),
    validation = Rule::new("!has(self.type) || self.type != 'Explicit' || (has(self.edges) && size(self.edges) > 0)").message(
        "topology.edges must list at least one {from, to} pair of SyncPeer names when topology.type is Explicit",
    ),
    validation = Rule::new("!has(self.hubs) || size(self.hubs) == 0 || (has(self.type) && self.type == 'HubAndSpoke')").message(
        "topology.hubs is used only with topology.type HubAndSpoke; remove it or set type: HubAndSpoke",
    ),
    validation = Rule::new("!has(self.edges) || size(self.edges) == 0 || (has(self.type) && self.type == 'Explicit')").message(
        "topology.edges is used only with topology.type Explicit; remove it or set type: Explicit",
    )
)]
pub struct Topology {
    /// `Mesh` (everyone with everyone), `HubAndSpoke`, `Ring` or `Explicit`.
    #[serde(rename = "type", default)]
    pub type_: TopologyType,
    /// For `HubAndSpoke`: names of the hub `SyncPeer`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schemas::peer_name_set")]
    pub hubs: Vec<String>,
    /// For `Explicit`: changes flow along each edge from `from` to `to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["from", "to"]))]
    pub edges: Vec<TopologyEdge>,
}

/// The shape of a topology.
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
pub enum TopologyType {
    /// Everyone with everyone.
    #[default]
    Mesh,
    /// Hubs mesh among themselves and sync with every spoke; spokes only with hubs.
    HubAndSpoke,
    /// Members in a stable order (SyncPeer name, pod name), each with its two neighbours.
    Ring,
    /// Exactly the listed edges between SyncPeers.
    Explicit,
}

/// Changes flow from every member of `from` to every member of `to`.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, KubeSchema,
)]
#[x_kube(validation = Rule::new("self.from != self.to").message(
    "a topology edge must connect two different SyncPeers: from and to are the same",
))]
pub struct TopologyEdge {
    /// Name of the source `SyncPeer`.
    #[schemars(schema_with = "schemas::peer_name")]
    pub from: String,
    /// Name of the destination `SyncPeer`.
    #[schemars(schema_with = "schemas::peer_name")]
    pub to: String,
}

/// Which collections a policy syncs: `include` (empty: all) minus `exclude`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionFilter {
    /// Collections to sync; empty means all.
    #[serde(default)]
    #[schemars(schema_with = "schemas::collection_list")]
    pub include: Vec<String>,
    /// Collections never synced, even when included.
    #[serde(default)]
    #[schemars(schema_with = "schemas::collection_list")]
    pub exclude: Vec<String>,
}

/// A key in a Secret of the policy's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(schema_with = "schemas::peer_name")]
    pub name: String,
    /// Key within the Secret (default `token`).
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_secret_key() -> String {
    "token".into()
}

/// Observed state of a `SyncPolicy`, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicyStatus {
    /// Members of all selected `SyncPeer`s.
    #[serde(default)]
    pub members: i32,
    /// Members that answered their last status and sync without error.
    #[serde(default)]
    pub ready_members: i32,
    /// The computed edges with their lag.
    #[serde(default)]
    pub edges: Vec<EdgeStatus>,
    /// The largest lag over all edges, in seconds.
    #[serde(default)]
    pub max_lag_seconds: i64,
    /// Conflicts recorded by all members.
    #[serde(default)]
    pub conflicts: i64,
    /// Tombstones older than this HLC (hex) may be purged by the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_horizon: Option<String>,
    /// When every ready member last finished a sync round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schemas::date_time")]
    pub last_sync_time: Option<Time>,
    /// `Ready`, `Converged` and `Degraded`.
    #[serde(default)]
    #[schemars(schema_with = "schemas::conditions")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One directed edge: `to` receives `from`'s changes (by pulling or by `from` pushing).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeStatus {
    /// Member whose changes flow (pod name, or the external `SyncPeer`'s name).
    pub from: String,
    /// Member receiving them.
    pub to: String,
    /// `Pull` (`to` pulls) or `Push` (`from` pushes).
    pub mode: String,
    /// Entries in `from`'s log after `to`'s checkpoint.
    #[serde(default)]
    pub pending_changes: i64,
    /// Age in seconds of the oldest of those (0 when none).
    #[serde(default)]
    pub lag_seconds: i64,
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// Both CRDs, `SyncPeer` first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![SyncPeer::crd(), SyncPolicy::crd()]
}

/// Both CRDs as one multi-document YAML stream: what `crdgen` prints and `crds/` holds.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CRD serializes to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Hand-written structural schemas for k8s types (k8s-openapi is built without its `schemars`
/// feature) and for lists that need bounds for CEL's cost estimate.
mod schemas {
    use schemars::{json_schema, Schema, SchemaGenerator};

    /// Collection names, as `crate::model::validate_name` accepts them.
    pub const COLLECTION_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$";
    /// A Kubernetes object name (DNS subdomain).
    pub const NAME_PATTERN: &str =
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

    pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A label selector: matchLabels and matchExpressions are ANDed.",
            "type": "object",
            "properties": {
                "matchLabels": {
                    "description": "Labels that must all match exactly.",
                    "type": "object",
                    "additionalProperties": {"type": "string", "maxLength": 63},
                    "maxProperties": 64
                },
                "matchExpressions": {
                    "description": "Requirements that must all hold.",
                    "type": "array",
                    "maxItems": 64,
                    "x-kubernetes-list-type": "atomic",
                    "items": {
                        "type": "object",
                        "required": ["key", "operator"],
                        "properties": {
                            "key": {"type": "string", "maxLength": 317},
                            "operator": {
                                "type": "string",
                                "enum": ["In", "NotIn", "Exists", "DoesNotExist"]
                            },
                            "values": {
                                "type": "array",
                                "maxItems": 256,
                                "x-kubernetes-list-type": "atomic",
                                "items": {"type": "string", "maxLength": 63}
                            }
                        }
                    }
                }
            },
            "x-kubernetes-map-type": "atomic"
        })
    }

    pub fn collection_list(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "maxItems": 256,
            "x-kubernetes-list-type": "set",
            "items": {"type": "string", "maxLength": 128, "pattern": COLLECTION_PATTERN}
        })
    }

    pub fn peer_name(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 253,
            "pattern": NAME_PATTERN
        })
    }

    pub fn peer_name_set(g: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "maxItems": 256,
            "x-kubernetes-list-type": "set",
            "items": peer_name(g)
        })
    }

    pub fn conflict_strategy(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "enum": super::CONFLICT_STRATEGIES,
            "default": "LastWriterWins"
        })
    }

    pub fn date_time(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }

    /// `metav1.Condition`, as upstream defines it, as a list map keyed by `type`.
    pub fn conditions(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": {
                "description": "Condition contains details for one aspect of the current state of this API Resource.",
                "type": "object",
                "required": ["lastTransitionTime", "message", "reason", "status", "type"],
                "properties": {
                    "lastTransitionTime": {
                        "description": "lastTransitionTime is the last time the condition transitioned from one status to another.",
                        "type": "string",
                        "format": "date-time"
                    },
                    "message": {
                        "description": "message is a human readable message indicating details about the transition.",
                        "type": "string",
                        "maxLength": 32768
                    },
                    "observedGeneration": {
                        "description": "observedGeneration represents the .metadata.generation that the condition was set based upon.",
                        "type": "integer",
                        "format": "int64",
                        "minimum": 0
                    },
                    "reason": {
                        "description": "reason contains a programmatic identifier indicating the reason for the condition's last transition.",
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 1024,
                        "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                    },
                    "status": {
                        "description": "status of the condition, one of True, False, Unknown.",
                        "type": "string",
                        "enum": ["True", "False", "Unknown"]
                    },
                    "type": {
                        "description": "type of condition in CamelCase or in foo.example.com/CamelCase.",
                        "type": "string",
                        "maxLength": 316,
                        "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                    }
                }
            }
        })
    }
}

/// Names of every [`ConflictStrategy`] as the CRD spells them (the node's serde names).
pub const CONFLICT_STRATEGIES: [&str; 4] =
    ["LastWriterWins", "PreferLocal", "PreferRemote", "Merge"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        let v = serde_json::to_value(crd).unwrap();
        v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// Walks a schema and fails on anything kube-apiserver refuses in a structural schema.
    fn assert_structural(path: &str, v: &Value) {
        let Some(obj) = v.as_object() else { return };
        for bad in [
            "$ref",
            "$schema",
            "definitions",
            "$defs",
            "oneOf",
            "anyOf",
            "allOf",
            "not",
        ] {
            assert!(!obj.contains_key(bad), "{path} has '{bad}'");
        }
        if obj.get("x-kubernetes-int-or-string") != Some(&json!(true))
            && obj.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))
        {
            let ty = obj.get("type");
            assert!(
                ty.is_some_and(Value::is_string),
                "{path} needs a single type, has {ty:?}"
            );
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                assert_structural(&format!("{path}.{k}"), p);
            }
        }
        if let Some(items) = obj.get("items") {
            assert_structural(&format!("{path}[]"), items);
        }
        if let Some(ap) = obj.get("additionalProperties") {
            assert_structural(&format!("{path}{{}}"), ap);
        }
        // list-type map keys must be required (or defaulted) scalar properties of the items
        if obj.get("x-kubernetes-list-type") == Some(&json!("map")) {
            let items = &obj["items"];
            for key in obj["x-kubernetes-list-map-keys"].as_array().unwrap() {
                let key = key.as_str().unwrap();
                assert!(
                    items["required"].as_array().unwrap().contains(&json!(key)),
                    "{path}: list map key {key} must be required"
                );
            }
        }
        if obj.get("x-kubernetes-list-type") == Some(&json!("set")) {
            assert_ne!(
                obj["items"]["type"],
                json!("object"),
                "{path}: set of objects"
            );
        }
    }

    fn find<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
        let mut cur = v;
        for p in path {
            cur = if *p == "[]" {
                &cur["items"]
            } else {
                &cur["properties"][*p]
            };
        }
        cur
    }

    /// Every CEL rule in a schema, as (rule, message).
    fn all_rules(v: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if v.get("x-kubernetes-validations").is_some() {
            out.extend(rules_at(v));
        }
        for key in ["properties", "additionalProperties", "items"] {
            match v.get(key) {
                Some(Value::Object(o)) if key == "properties" => {
                    o.values().for_each(|p| out.extend(all_rules(p)))
                }
                Some(sub) => out.extend(all_rules(sub)),
                None => {}
            }
        }
        out
    }

    fn rules_at(v: &Value) -> Vec<(String, String)> {
        v["x-kubernetes-validations"]
            .as_array()
            .unwrap_or_else(|| panic!("no rules in {v}"))
            .iter()
            .map(|r| {
                (
                    r["rule"].as_str().unwrap().to_string(),
                    r["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn schemas_are_structural() {
        for crd in crds() {
            assert_structural("", &schema_of(&crd));
        }
    }

    #[test]
    fn crd_names_scope_and_subresources() {
        let peer = SyncPeer::crd();
        assert_eq!(peer.metadata.name.as_deref(), Some("syncpeers.ragsync.io"));
        assert_eq!(peer.spec.scope, "Namespaced");
        assert_eq!(peer.spec.names.short_names, Some(vec!["speer".to_string()]));
        let policy = SyncPolicy::crd();
        assert_eq!(
            policy.metadata.name.as_deref(),
            Some("syncpolicies.ragsync.io")
        );
        assert_eq!(
            policy.spec.names.short_names,
            Some(vec!["spol".to_string()])
        );
        for crd in [peer, policy] {
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, VERSION);
            assert!(v.subresources.as_ref().unwrap().status.is_some());
            assert!(v.served && v.storage);
        }
    }

    #[test]
    fn printer_columns_answer_is_it_healthy() {
        let names = |crd: CustomResourceDefinition| -> Vec<String> {
            crd.spec.versions[0]
                .additional_printer_columns
                .clone()
                .unwrap()
                .into_iter()
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(
            names(SyncPeer::crd()),
            [
                "Members",
                "Ready",
                "Watermark",
                "Lag",
                "Conflicts",
                "Status",
                "Age"
            ]
        );
        assert_eq!(
            names(SyncPolicy::crd()),
            [
                "Topology",
                "Members",
                "Ready",
                "MaxLag",
                "Conflicts",
                "Converged",
                "Age"
            ]
        );
        // every status column points at a field that exists in the schema
        for crd in crds() {
            let schema = schema_of(&crd);
            for col in crd.spec.versions[0]
                .additional_printer_columns
                .clone()
                .unwrap()
            {
                let path = col.json_path.split('[').next().unwrap();
                let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
                if parts[0] == "metadata" {
                    continue;
                }
                let field = find(&schema, &parts);
                assert!(
                    field.is_object(),
                    "{}: column {} -> {path}",
                    crd.spec.names.kind,
                    col.name
                );
            }
        }
    }

    #[test]
    fn conditions_are_a_map_keyed_by_type() {
        for crd in crds() {
            let c = find(&schema_of(&crd), &["status", "conditions"]).clone();
            assert_eq!(c["x-kubernetes-list-type"], json!("map"));
            assert_eq!(c["x-kubernetes-list-map-keys"], json!(["type"]));
        }
    }

    #[test]
    fn rules_sit_where_they_apply() {
        let peer = schema_of(&SyncPeer::crd());
        assert_eq!(rules_at(find(&peer, &["spec"])).len(), 3);
        assert_eq!(rules_at(find(&peer, &["spec", "endpoint"])).len(), 1);
        assert_eq!(find(&peer, &["spec", "endpoint"])["maxLength"], json!(2048));
        assert_eq!(find(&peer, &["spec", "port"])["maximum"], json!(65535.0));
        assert_eq!(
            find(&peer, &["spec", "direction"])["default"],
            json!("Both")
        );

        let pol = schema_of(&SyncPolicy::crd());
        let spec = find(&pol, &["spec"]);
        assert_eq!(rules_at(spec).len(), 1);
        assert_eq!(rules_at(find(spec, &["topology"])).len(), 4);
        assert_eq!(rules_at(find(spec, &["topology", "edges", "[]"])).len(), 1);
        for f in ["interval", "statusInterval", "maxClockDrift"] {
            assert_eq!(rules_at(find(spec, &[f])).len(), 1, "{f}");
        }
        assert_eq!(find(spec, &["interval"])["default"], json!("30s"));
        assert_eq!(find(spec, &["statusInterval"])["default"], json!("15s"));
        assert_eq!(find(spec, &["maxClockDrift"])["default"], json!("500ms"));
        assert_eq!(find(spec, &["batchSize"])["default"], json!(1000));
        assert_eq!(find(spec, &["batchSize"])["minimum"], json!(1.0));
        assert_eq!(find(spec, &["batchSize"])["maximum"], json!(10000.0));
        assert_eq!(
            find(spec, &["conflictStrategy"])["default"],
            json!("LastWriterWins")
        );
        assert_eq!(find(spec, &["topology", "type"])["default"], json!("Mesh"));
        assert_eq!(
            spec["required"],
            json!(["peerSelector"]),
            "only peerSelector is required"
        );
        // every message tells what to fix, not just what is wrong
        let all: Vec<_> = [&peer, &pol].into_iter().flat_map(all_rules).collect();
        assert_eq!(all.len(), 4 + 1 + 4 + 1 + 3, "{all:?}");
        for (rule, msg) in &all {
            assert!(!rule.is_empty() && msg.len() > 20, "{rule}: {msg}");
        }
    }

    #[test]
    fn conflict_strategy_names_match_the_node() {
        // An exhaustive match: adding a strategy to the node fails here until the CRD lists it.
        fn name(s: ConflictStrategy) -> &'static str {
            match s {
                ConflictStrategy::LastWriterWins => "LastWriterWins",
                ConflictStrategy::PreferLocal => "PreferLocal",
                ConflictStrategy::PreferRemote => "PreferRemote",
                ConflictStrategy::Merge => "Merge",
            }
        }
        for n in CONFLICT_STRATEGIES {
            let s: ConflictStrategy = serde_json::from_value(json!(n)).unwrap();
            assert_eq!(name(s), n);
            assert_eq!(serde_json::to_value(s).unwrap(), json!(n));
        }
    }

    #[test]
    fn design_example_round_trips_with_defaults() {
        let peer: SyncPeer = serde_yaml::from_str(
            r#"
apiVersion: ragsync.io/v1alpha1
kind: SyncPeer
metadata: {name: rag-eu, labels: {ragsync.io/policy: docs}}
spec:
  selector: {matchLabels: {app: rag, region: eu}}
  port: 8090
  collections: [docs]
  direction: Both
"#,
        )
        .unwrap();
        assert_eq!(peer.spec.effective_port(), 8090);
        assert!(!peer.spec.is_external());
        assert_eq!(peer.spec.direction.to_config(), config::Direction::Both);

        let policy: SyncPolicy = serde_yaml::from_str(
            r#"
apiVersion: ragsync.io/v1alpha1
kind: SyncPolicy
metadata: {name: docs}
spec:
  peerSelector: {matchLabels: {ragsync.io/policy: docs}}
  topology:
    type: HubAndSpoke
    hubs: [rag-eu]
  interval: 30s
  batchSize: 1000
  conflictStrategy: LastWriterWins
  collections: {include: [], exclude: []}
  paused: false
  authSecretRef: {name: rag-sync-token, key: token}
  maxClockDrift: 500ms
  statusInterval: 15s
"#,
        )
        .unwrap();
        assert_eq!(policy.spec.topology.type_, TopologyType::HubAndSpoke);
        assert_eq!(policy.spec.interval(), time::Duration::from_secs(30));
        assert_eq!(
            policy.spec.max_clock_drift(),
            time::Duration::from_millis(500)
        );

        let base = policy.spec.base_config(None).unwrap();
        assert_eq!((base.interval_seconds, base.batch_size), (30, 1000));
        assert!(base.peers.is_empty());

        let minimal: SyncPolicySpec = serde_json::from_value(json!({"peerSelector": {}})).unwrap();
        assert_eq!(minimal.topology.type_, TopologyType::Mesh);
        assert_eq!(minimal.batch_size, 1000);
        assert_eq!(minimal.status_interval(), time::Duration::from_secs(15));
        assert_eq!(minimal.conflict_strategy, ConflictStrategy::LastWriterWins);
        let odd = SyncPolicySpec {
            interval: "1.5s".parse().unwrap(),
            conflict_strategy: ConflictStrategy::PreferRemote,
            ..minimal.clone()
        };
        let base = odd.base_config(Some(Hlc(7))).unwrap();
        assert_eq!(base.interval_seconds, 2, "rounded up");
        assert_eq!(base.conflict_strategy, ConflictStrategy::PreferRemote);
        assert_eq!(base.gc_horizon, Some(Hlc(7)));
        let bad = SyncPolicySpec {
            batch_size: 0,
            ..minimal.clone()
        };
        assert!(bad.base_config(None).unwrap_err().contains("batch_size"));
        let ext: SyncPeerSpec =
            serde_json::from_value(json!({"endpoint": "https://rag.us.example.com:8090"})).unwrap();
        assert!(ext.is_external());
        assert_eq!(ext.direction, PeerDirection::Both);
    }

    #[test]
    fn status_serializes_camel_case() {
        let s = SyncPeerStatus {
            members: vec![MemberStatus {
                pod: "rag-0".into(),
                pending_changes: 3,
                ..Default::default()
            }],
            ready_members: 1,
            ..Default::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["readyMembers"], json!(1));
        assert_eq!(v["members"][0]["pendingChanges"], json!(3));
        assert_eq!(v["lagSeconds"], json!(0));
    }

    #[test]
    fn durations_parse_like_go() {
        // Every syntax the CRD's rule admits (`<number><unit>...`), read as Go reads it.
        let ok = [
            ("30s", 30_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("2h", 7_200_000),
            ("1h1m1s", 3_661_000),
            ("1000us", 1),
            ("0s", 0),
        ];
        for (s, ms) in ok {
            let spec: SyncPolicySpec =
                serde_json::from_value(json!({"peerSelector": {}, "maxClockDrift": s})).unwrap();
            assert_eq!(spec.max_clock_drift().as_millis(), ms, "{s}");
        }
        // Go also reads "", "-1s", ".5s" and "1.s"; the CRD's rule refuses them.
        for bad in ["30", "s", "1d", "1 s", "1.5.5s", "30S"] {
            let spec = json!({"peerSelector": {}, "interval": bad});
            assert!(
                serde_json::from_value::<SyncPolicySpec>(spec).is_err(),
                "{bad} parsed"
            );
        }
    }

    #[test]
    fn duration_fields_share_one_syntax_rule() {
        let pol = schema_of(&SyncPolicy::crd());
        for f in ["interval", "statusInterval", "maxClockDrift"] {
            let rules = rules_at(find(&pol, &["spec", f]));
            assert!(rules[0].0.starts_with(DURATION_SYNTAX), "{f}: {rules:?}");
        }
    }
}
