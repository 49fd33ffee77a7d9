//! The `SyncPolicy` resource: who syncs with whom among the selected `SyncPeer`s and how, and
//! its observed state.

use std::time;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::{Duration, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schemas;
use crate::config::{self, ConflictStrategy};
use crate::hlc::Hlc;

/// Upper bound of `batchSize`, the same as what a node accepts.
pub const MAX_BATCH_SIZE: i32 = config::MAX_BATCH_SIZE as i32;

/// Names of every [`ConflictStrategy`] as the CRD spells them (the node's serde names).
pub const CONFLICT_STRATEGIES: [&str; 4] =
    ["LastWriterWins", "PreferLocal", "PreferRemote", "Merge"];

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
        description = "Mesh, Sparse, HubAndSpoke, Ring or Explicit"
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
    "conflictStrategy PreferLocal and PreferRemote cannot converge in a Mesh, Sparse or Ring topology (each node keeps its own version); use LastWriterWins or Merge, or a HubAndSpoke or Explicit topology where one side is authoritative",
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
    /// Secret key holding the nodes' admin token (the operator calls their `/admin/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretKeyRef>,
    /// The nodes serve HTTPS: how the operator verifies them, and how their pods are named
    /// to each other (by their DNS names, which their certificates hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PolicyTls>,
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
pub(super) const DURATION_SYNTAX: &str = "self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')";

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
            live: true,
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
    ),
    validation = Rule::new("!has(self.fanout) || (has(self.type) && self.type == 'Sparse')").message(
        "topology.fanout is used only with topology.type Sparse; remove it or set type: Sparse",
    )
)]
pub struct Topology {
    /// `Mesh` (everyone with everyone), `Sparse`, `HubAndSpoke`, `Ring` or `Explicit`.
    #[serde(rename = "type", default)]
    pub type_: TopologyType,
    /// For `Sparse`: how many others each member receives changes from (2 to 16, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 16))]
    pub fanout: Option<i32>,
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
    /// Each member receives changes from `fanout` others, chosen from the member names:
    /// always strongly connected, about log_fanout(N) hops across, and a member joining or
    /// leaving changes O(fanout) edges.
    Sparse,
    /// Hubs mesh among themselves; each spoke syncs with two hub members (one when there is
    /// only one), chosen from the names, and not with other spokes.
    HubAndSpoke,
    /// Members in a stable order (SyncPeer name, pod name), each with its two neighbours.
    Ring,
    /// Exactly the listed edges between SyncPeers.
    Explicit,
}

/// `fanout` when absent.
pub const DEFAULT_FANOUT: i32 = 3;
/// Bounds of `fanout`, as the CRD's schema sets them.
pub const FANOUT_RANGE: std::ops::RangeInclusive<i32> = 2..=16;

impl Topology {
    /// `fanout`, or [`DEFAULT_FANOUT`] when absent; clamped into [`FANOUT_RANGE`] (the API
    /// server refuses values outside it, so this only guards specs built in code).
    pub fn fanout(&self) -> usize {
        let f = self
            .fanout
            .unwrap_or(DEFAULT_FANOUT)
            .clamp(*FANOUT_RANGE.start(), *FANOUT_RANGE.end());
        usize::try_from(f).expect("clamped to a positive range")
    }
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

/// TLS towards the policy's nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTls {
    /// Secret key holding the CA certificate (PEM) the nodes' certificates chain to.
    pub ca_secret_ref: CaSecretRef,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) the operator presents to nodes
    /// that require client certificates (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretRef>,
}

/// A key in a Secret of the policy's namespace holding a CA certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretRef {
    /// Secret name.
    #[schemars(schema_with = "schemas::peer_name")]
    pub name: String,
    /// Key within the Secret (default `ca.crt`).
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// A Secret of the policy's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    #[schemars(schema_with = "schemas::peer_name")]
    pub name: String,
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
    /// The edges with the largest lag, at most 10 (all of them when there are no more), worst
    /// first; `edgeCount` and `laggingEdges` count them all. Bounded, so status stays small at
    /// any size.
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub edges: Vec<EdgeStatus>,
    /// Directed edges of the topology.
    #[serde(default)]
    pub edge_count: i32,
    /// Edges with changes pending.
    #[serde(default)]
    pub lagging_edges: i32,
    /// The largest lag over all edges, in seconds.
    #[serde(default)]
    pub max_lag_seconds: i64,
    /// The 99th percentile of the edges' lag, in seconds.
    #[serde(default)]
    pub p99_lag_seconds: i64,
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
