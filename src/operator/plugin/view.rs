//! What `kubectl ragsync` shows, pure: the members of a policy (from the SyncPeers' status),
//! the edges and their backlogs (from the nodes' own `/admin/status`), and the retained
//! conflicts deduplicated across members. No IO here: [`super::read`] fetches, these functions
//! decide, [`super::render`] prints.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::hlc::Hlc;
use crate::model::{ConflictVersion, Kind, NodeId};
use crate::operator::crd::{MemberStatus, SyncPeer, SyncPolicy, Topology};
use crate::operator::lag;
use crate::operator::members;
use crate::operator::topology::Mode;
use crate::wire::{Backlog, ConflictEntry, NodeStatus};

/// Where a member's node is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An in-cluster pod: through the API server's pod proxy (`pod:port`), or directly at
    /// `endpoint` (the address the operator uses) with `--direct`.
    Pod {
        pod: String,
        port: u16,
        endpoint: Option<String>,
    },
    /// An external node (a SyncPeer with `spec.endpoint`): always directly.
    External { endpoint: String },
    /// Not read, and why (a selected pod that is not a member: not ready or without an IP).
    Skip(String),
}

/// A member as its SyncPeer's status lists it, and where to read its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRef {
    pub view: MemberView,
    pub target: Target,
}

/// One member, as status reports it and as its node answered now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// The pod name, or the SyncPeer's name for an external node.
    pub name: String,
    /// The SyncPeer it belongs to.
    pub peer: String,
    pub external: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    pub conflicts: i64,
    pub lag_seconds: i64,
    pub pending_changes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The live read of its node.
    pub node: NodeRead,
}

/// What the live read of a member's node gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum NodeRead {
    /// Not read yet (or not a command that reads nodes).
    NotRead,
    /// Not asked, and why.
    #[serde(rename_all = "camelCase")]
    Skipped { reason: String },
    /// The node answered.
    #[serde(rename_all = "camelCase")]
    Read {
        node_id: String,
        watermark: String,
        documents: u64,
        conflicts: u64,
        /// Over its incoming edges, read live ([`lag::member_lag`]); `None` until the edges
        /// are measured, or when one of them is unknown.
        #[serde(skip_serializing_if = "Option::is_none")]
        pending_changes: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        lag_ms: Option<u64>,
    },
    /// The node listed its retained conflicts: this many records.
    #[serde(rename_all = "camelCase")]
    Listed { records: usize },
    /// The read failed: the API server refused the proxy, the node was unreachable or
    /// answered with an error.
    #[serde(rename_all = "camelCase")]
    Failed { error: String },
}

impl NodeRead {
    pub fn failed(&self) -> bool {
        matches!(self, NodeRead::Failed { .. })
    }

    /// What the live read of `status` shows.
    pub fn of(status: &NodeStatus) -> NodeRead {
        NodeRead::Read {
            node_id: status.node_id.to_hex(),
            watermark: status.watermark.to_hex(),
            documents: status.documents,
            conflicts: status.conflicts,
            pending_changes: None,
            lag_ms: None,
        }
    }
}

/// Fills in each read member's live lag from the edges into it: pending changes summed over
/// its sources, the largest lag ([`lag::member_lag`]); unknown when one of those edges is.
pub fn live_member_lag(members: &mut [MemberView], edges: &[EdgeView]) {
    for m in members {
        let NodeRead::Read {
            pending_changes,
            lag_ms,
            ..
        } = &mut m.node
        else {
            continue;
        };
        let incoming: Vec<&EdgeView> = edges.iter().filter(|e| e.to == m.name).collect();
        let known: Option<Vec<(&str, lag::Lag)>> = incoming
            .iter()
            .map(|e| {
                Some((
                    e.from.as_str(),
                    lag::Lag {
                        pending_changes: e.pending_changes?,
                        lag_ms: e.lag_ms?,
                    },
                ))
            })
            .collect();
        let total = known.map(lag::member_lag);
        *pending_changes = total.map(|l| l.pending_changes);
        *lag_ms = total.map(|l| l.lag_ms);
    }
}

/// A duration in milliseconds, short: `0s`, `850ms`, `30s`, `12.3s`, `1m`, `4m05s`, `1h`,
/// `2h10m`, `3d4h` (tenths of seconds below a minute, then truncated to the unit shown).
pub fn short_duration(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0 => "0s".into(),
        1..=999 => format!("{ms}ms"),
        1000..=59_999 if ms % 1000 < 100 => format!("{s}s"),
        1000..=59_999 => format!("{}.{}s", s, (ms % 1000) / 100),
        60_000..=3_599_999 if s % 60 == 0 => format!("{}m", s / 60),
        60_000..=3_599_999 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..=86_399_999 if (s % 3600) / 60 == 0 => format!("{}h", s / 3600),
        3_600_000..=86_399_999 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The members of the SyncPeers `peers`, with where to read each.
///
/// With the namespace's `pods`, members are decided as the operator decides them
/// ([`members::membership`]: the ready pods with an IP that each SyncPeer selects, and the
/// external endpoints), so members that a bounded status leaves out are read too; each is
/// joined with its entry in its SyncPeer's status `members[]` where there is one (ready,
/// watermark, lag, last error as the operator last reported; a member status does not list is
/// shown ready, as its pod is). Selected pods that are not members are listed, not read.
/// Without `pods` (the caller may not list them), the members are those the SyncPeers' status
/// lists. Peers by name, each peer's members by pod name.
pub fn members(peers: &[SyncPeer], pods: Option<&[Arc<Pod>]>) -> Vec<MemberRef> {
    let mut peers: Vec<&SyncPeer> = peers.iter().collect();
    peers.sort_by_key(|p| p.name_any());
    let reported = |peer: &str, name: &str| -> Option<&MemberStatus> {
        peers
            .iter()
            .find(|p| p.name_any() == peer)?
            .status
            .as_ref()?
            .members
            .iter()
            .find(|m| m.pod == name)
    };
    match pods {
        Some(pods) => {
            let selection = members::Selection {
                peers: peers.iter().map(|p| Arc::new((*p).clone())).collect(),
                ..Default::default()
            };
            let membership = members::membership(&selection, pods);
            let mut out: Vec<MemberRef> = membership
                .members
                .iter()
                .map(|m| {
                    let spec = &peers
                        .iter()
                        .find(|p| p.name_any() == m.peer)
                        .expect("a member's peer was selected")
                        .spec;
                    let target = if m.managed {
                        Target::Pod {
                            pod: m.name.clone(),
                            port: spec.effective_port(),
                            endpoint: Some(m.endpoint.clone()),
                        }
                    } else {
                        Target::External {
                            endpoint: m.endpoint.clone(),
                        }
                    };
                    let view = match reported(&m.peer, &m.name) {
                        Some(st) => MemberView {
                            endpoint: Some(m.endpoint.clone()),
                            ..member_view(&m.peer, !m.managed, st)
                        },
                        None => MemberView {
                            name: m.name.clone(),
                            peer: m.peer.clone(),
                            external: !m.managed,
                            node_id: None,
                            endpoint: Some(m.endpoint.clone()),
                            ready: m.managed,
                            watermark: None,
                            conflicts: 0,
                            lag_seconds: 0,
                            pending_changes: 0,
                            last_error: None,
                            node: NodeRead::NotRead,
                        },
                    };
                    MemberRef { view, target }
                })
                .collect();
            for a in &membership.absent {
                let mut view = match reported(&a.peer, &a.pod) {
                    Some(st) => member_view(&a.peer, false, st),
                    None => member_view(
                        &a.peer,
                        false,
                        &MemberStatus {
                            pod: a.pod.clone(),
                            ..Default::default()
                        },
                    ),
                };
                view.ready = false;
                out.push(MemberRef {
                    view,
                    target: Target::Skip(NOT_A_MEMBER.into()),
                });
            }
            out.sort_by(|a, b| (&a.view.peer, &a.view.name).cmp(&(&b.view.peer, &b.view.name)));
            out
        }
        None => {
            let mut out = Vec::new();
            for peer in peers {
                out.extend(reported_members(peer));
            }
            out
        }
    }
}

const NOT_A_MEMBER: &str = "not a member now (the pod is not ready or has no IP)";

fn member_view(peer: &str, external: bool, m: &MemberStatus) -> MemberView {
    MemberView {
        name: m.pod.clone(),
        peer: peer.to_string(),
        external,
        node_id: m.node_id.clone(),
        endpoint: m.endpoint.clone(),
        ready: m.ready,
        watermark: m.watermark.clone(),
        conflicts: m.conflicts,
        lag_seconds: m.lag_seconds,
        pending_changes: m.pending_changes,
        last_error: m.last_error.clone(),
        node: NodeRead::NotRead,
    }
}

/// The members `peer`'s status lists, with where to read them; an external peer the operator
/// has not reported on yet is still one member, at its endpoint.
fn reported_members(peer: &SyncPeer) -> Vec<MemberRef> {
    let external = peer
        .spec
        .endpoint
        .as_deref()
        .map(|e| e.trim_end_matches('/').to_string());
    let listed = peer
        .status
        .as_ref()
        .map(|s| s.members.as_slice())
        .unwrap_or_default();
    let mut out: Vec<MemberRef> = listed
        .iter()
        .map(|m| MemberRef {
            view: member_view(&peer.name_any(), external.is_some(), m),
            target: match (&external, &m.endpoint) {
                (Some(e), _) => Target::External {
                    endpoint: e.clone(),
                },
                (None, Some(endpoint)) => Target::Pod {
                    pod: m.pod.clone(),
                    port: peer.spec.effective_port(),
                    endpoint: Some(endpoint.clone()),
                },
                (None, None) => Target::Skip(NOT_A_MEMBER.into()),
            },
        })
        .collect();
    if let (true, Some(e)) = (listed.is_empty(), external) {
        out.push(MemberRef {
            view: member_view(
                &peer.name_any(),
                true,
                &MemberStatus {
                    pod: peer.name_any(),
                    endpoint: Some(e.clone()),
                    ..Default::default()
                },
            ),
            target: Target::External { endpoint: e },
        });
    }
    out
}

/// The pod-based SyncPeers among `peers` that have no member in `members`: they select no
/// pod (or, without the pods, the operator has not reported on them).
pub fn peers_without_members(peers: &[SyncPeer], members: &[MemberRef]) -> Vec<String> {
    let mut v: Vec<String> = peers
        .iter()
        .filter(|p| p.spec.endpoint.is_none())
        .map(|p| p.name_any())
        .filter(|name| !members.iter().any(|m| &m.view.peer == name))
        .collect();
    v.sort();
    v
}

/// How an edge's backlog is to be learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BacklogSource {
    /// The sender's status reports it (`pullers[]`, or the peer's `push_backlog`).
    Served(Backlog),
    /// The sender's status does not: ask the sender's `/admin/backlog` from the receiver's
    /// checkpoint in its log (no checkpoint: from the start), in these collections.
    Ask {
        since: Option<Hlc>,
        collections: Vec<String>,
    },
    /// Cannot be learnt, and why (the sender was not read).
    Unknown(String),
}

/// An edge as the nodes' statuses show it: changes flow `from` → `to`, carried as `mode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgePlan {
    pub from: String,
    pub to: String,
    pub mode: Mode,
    pub backlog: BacklogSource,
    /// The sender's wall clock when it answered (ms), to age the backlog with: so that the
    /// lag does not depend on the clock of the machine `kubectl` runs on.
    pub sender_wall_ms: Option<u64>,
}

/// The edges, from each read member's own status (`nodes`, by member name): a peer it pulls
/// from is the edge peer → it (`Pull`), a peer it pushes to is it → peer (`Push`). Each edge's
/// backlog is what its sender serves the receiver ([`lag::served_backlog`]); where the sender
/// does not report it, the sender is to be asked from the receiver's checkpoint.
pub fn derive_edges(nodes: &BTreeMap<String, NodeStatus>) -> Vec<EdgePlan> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let wall = |s: &NodeStatus| (s.wall_ms > 0).then_some(s.wall_ms);
    for (me, status) in nodes {
        for p in &status.peers {
            if p.direction.pulls() && seen.insert((p.peer_id.clone(), me.clone(), Mode::Pull)) {
                let sender = nodes.get(&p.peer_id);
                let backlog = match sender {
                    None => BacklogSource::Unknown(format!("{} was not read", p.peer_id)),
                    Some(s) => match lag::served_backlog(s, Mode::Pull, me, Some(status.node_id)) {
                        Some(b) => BacklogSource::Served(b),
                        None => BacklogSource::Ask {
                            since: p.checkpoint,
                            collections: p.collections.clone(),
                        },
                    },
                };
                out.push(EdgePlan {
                    from: p.peer_id.clone(),
                    to: me.clone(),
                    mode: Mode::Pull,
                    backlog,
                    sender_wall_ms: sender.and_then(wall),
                });
            }
            if p.direction.pushes() && seen.insert((me.clone(), p.peer_id.clone(), Mode::Push)) {
                let backlog = match lag::served_backlog(status, Mode::Push, &p.peer_id, None) {
                    Some(b) => BacklogSource::Served(b),
                    None => BacklogSource::Ask {
                        since: p.push_checkpoint,
                        collections: p.collections.clone(),
                    },
                };
                out.push(EdgePlan {
                    from: me.clone(),
                    to: p.peer_id.clone(),
                    mode: Mode::Push,
                    backlog,
                    sender_wall_ms: wall(status),
                });
            }
        }
    }
    out
}

/// One edge with its backlog, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    pub mode: &'static str,
    /// Entries in the sender's log the receiver has not received (`None`: unknown).
    pub pending_changes: Option<u64>,
    /// Age of the oldest of them in milliseconds (0 when nothing is pending).
    pub lag_ms: Option<u64>,
    /// The oldest pending entry's HLC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<Hlc>,
    /// Where the backlog came from: `status` (the sender reports it), `backlog` (asked with
    /// `/admin/backlog` from the receiver's checkpoint) or `unknown`.
    pub source: &'static str,
    /// Why the backlog is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
}

/// What was learnt of an edge's backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measured {
    /// From the sender's status.
    Served(Backlog),
    /// From the sender's `/admin/backlog`.
    Asked(Backlog),
    Unknown(String),
}

/// An edge's view from its plan and what was learnt of its backlog; `local_now_ms` ages the
/// backlog when the sender's own clock is not known.
pub fn edge_view(plan: &EdgePlan, measured: Measured, local_now_ms: u64) -> EdgeView {
    let now = plan.sender_wall_ms.unwrap_or(local_now_ms);
    let (backlog, source, reason) = match measured {
        Measured::Served(b) => (Some(b), "status", None),
        Measured::Asked(b) => (Some(b), "backlog", None),
        Measured::Unknown(why) => (None, "unknown", Some(why)),
    };
    let lag = backlog.map(|b| lag::edge_lag(&b, now));
    EdgeView {
        from: plan.from.clone(),
        to: plan.to.clone(),
        mode: plan.mode.as_str(),
        pending_changes: lag.map(|l| l.pending_changes),
        lag_ms: lag.map(|l| l.lag_ms),
        oldest: backlog.filter(|b| b.pending > 0).and_then(|b| b.oldest),
        source,
        unknown_reason: reason,
    }
}

/// Worst first: edges with changes pending (largest lag, then most pending), then the edges
/// whose backlog is unknown (they may be lagging), then the rest; ties by name.
pub fn sort_worst_first(edges: &mut [EdgeView]) {
    edges.sort_by_key(|e| {
        let class = match e.pending_changes {
            Some(p) if p > 0 => 0,
            None => 1,
            Some(_) => 2,
        };
        (
            class,
            Reverse(e.lag_ms.unwrap_or(0)),
            Reverse(e.pending_changes.unwrap_or(0)),
            e.from.clone(),
            e.to.clone(),
            e.mode,
        )
    });
}

/// A condition as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

impl From<&Condition> for ConditionView {
    fn from(c: &Condition) -> Self {
        ConditionView {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: c.last_transition_time.0.to_string(),
        }
    }
}

/// The policy's totals, from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TotalsView {
    pub members: i32,
    pub ready_members: i32,
    pub max_lag_seconds: i64,
    pub conflicts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_horizon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
}

/// How nodes were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Access {
    /// Through the API server's pod proxy, with the caller's credentials.
    Proxy,
    /// At the nodes' endpoints (from inside the pod network).
    Direct,
}

/// `kubectl ragsync status POLICY`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub namespace: String,
    pub policy: String,
    pub topology: Topology,
    pub paused: bool,
    pub interval: String,
    pub access: Access,
    pub totals: TotalsView,
    pub conditions: Vec<ConditionView>,
    pub members: Vec<MemberView>,
    /// Every edge, worst first.
    pub edges: Vec<EdgeView>,
    /// Things the reader should know (no token, status older than the spec, ...).
    pub notes: Vec<String>,
}

impl StatusReport {
    /// The report's frame from the policy: everything but members, edges and notes.
    pub fn of_policy(policy: &SyncPolicy, access: Access) -> StatusReport {
        let st = policy.status.clone().unwrap_or_default();
        let mut notes = Vec::new();
        if policy.status.is_none() {
            notes.push("the SyncPolicy has no status yet: is the operator running?".into());
        } else if st.observed_generation.is_some()
            && st.observed_generation < policy.metadata.generation
        {
            notes.push(format!(
                "the status is of generation {} of the spec, the spec is at {}: the operator has not caught up yet",
                st.observed_generation.unwrap_or_default(),
                policy.metadata.generation.unwrap_or_default()
            ));
        }
        StatusReport {
            namespace: policy.namespace().unwrap_or_default(),
            policy: policy.name_any(),
            topology: policy.spec.topology.clone(),
            paused: policy.spec.paused,
            interval: short_duration(
                u64::try_from(policy.spec.interval().as_millis()).unwrap_or(u64::MAX),
            ),
            access,
            totals: TotalsView {
                members: st.members,
                ready_members: st.ready_members,
                max_lag_seconds: st.max_lag_seconds,
                conflicts: st.conflicts,
                gc_horizon: st.gc_horizon.clone(),
                last_sync_time: st.last_sync_time.as_ref().map(|t| t.0.to_string()),
            },
            conditions: st.conditions.iter().map(ConditionView::from).collect(),
            members: Vec::new(),
            edges: Vec::new(),
            notes,
        }
    }

    /// Members whose node could not be read.
    pub fn unread(&self) -> usize {
        self.members.iter().filter(|m| m.node.failed()).count()
    }
}

/// One version of a conflicting record, as shown.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    pub hlc: Hlc,
    pub node: NodeId,
    /// The member whose node wrote it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// Its HLC's wall time.
    pub time: String,
    /// The losing version's value (documents: content and metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

impl VersionView {
    fn new(hlc: Hlc, node: NodeId, writers: &BTreeMap<NodeId, String>) -> VersionView {
        VersionView {
            hlc,
            node,
            writer: writers.get(&node).cloned(),
            time: hlc_time(hlc),
            value: None,
        }
    }

    /// The writer's member name, or its node id.
    pub fn who(&self) -> String {
        self.writer.clone().unwrap_or_else(|| self.node.to_hex())
    }
}

/// The wall time of an HLC, RFC 3339 in UTC with milliseconds.
pub fn hlc_time(hlc: Hlc) -> String {
    i64::try_from(hlc.wall_ms())
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|| hlc.to_hex())
}

/// One retained conflict, as the members listed in `members` hold it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictRow {
    pub collection: String,
    pub kind: Kind,
    pub id: String,
    pub winner: VersionView,
    pub losers: Vec<VersionView>,
    pub members: Vec<String>,
}

/// The conflicts the members hold (`(member, its conflicts)`), one row per distinct record and
/// versions: the same conflict held by several members (conflict records replicate with their
/// record) is one row listing them all; members that disagree on it (not synced yet) give
/// one row each view. Ordered by collection, kind, id, then winner. `writers` names the members
/// by node id.
pub fn dedupe_conflicts(
    per_member: &[(String, Vec<ConflictEntry>)],
    writers: &BTreeMap<NodeId, String>,
) -> Vec<ConflictRow> {
    type Key = (String, String, String, (Hlc, NodeId), Vec<(Hlc, NodeId)>);
    let mut rows: BTreeMap<Key, (ConflictRow, BTreeSet<String>)> = BTreeMap::new();
    for (member, entries) in per_member {
        for e in entries {
            let mut losers: Vec<&ConflictVersion> = e.losers.iter().collect();
            losers.sort_by_key(|l| Reverse(l.order_key()));
            let key = (
                e.collection.clone(),
                e.kind.as_str().to_string(),
                e.id.clone(),
                e.winner.order_key(),
                losers.iter().map(|l| l.order_key()).collect(),
            );
            let (_, holders) = rows.entry(key).or_insert_with(|| {
                let row = ConflictRow {
                    collection: e.collection.clone(),
                    kind: e.kind,
                    id: e.id.clone(),
                    winner: VersionView::new(e.winner.hlc, e.winner.node, writers),
                    losers: losers
                        .iter()
                        .map(|l| VersionView {
                            value: serde_json::to_value(&l.value).ok(),
                            ..VersionView::new(l.hlc, l.node, writers)
                        })
                        .collect(),
                    members: Vec::new(),
                };
                (row, BTreeSet::new())
            });
            holders.insert(member.clone());
        }
    }
    rows.into_values()
        .map(|(mut row, holders)| {
            row.members = holders.into_iter().collect();
            row
        })
        .collect()
}

/// `kubectl ragsync conflicts POLICY`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictsReport {
    pub namespace: String,
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    pub access: Access,
    pub conflicts: Vec<ConflictRow>,
    /// Each member and how its node's read went.
    pub members: Vec<MemberView>,
    pub notes: Vec<String>,
}

impl ConflictsReport {
    pub fn unread(&self) -> usize {
        self.members.iter().filter(|m| m.node.failed()).count()
    }
}

/// Node id → member name, from what status and the live reads say.
pub fn writers(members: &[MemberView]) -> BTreeMap<NodeId, String> {
    let mut out = BTreeMap::new();
    for m in members {
        let live = match &m.node {
            NodeRead::Read { node_id, .. } => Some(node_id.as_str()),
            _ => None,
        };
        for id in live.into_iter().chain(m.node_id.as_deref()) {
            if let Ok(id) = NodeId::from_hex(id) {
                out.entry(id).or_insert_with(|| m.name.clone());
            }
        }
    }
    out
}
