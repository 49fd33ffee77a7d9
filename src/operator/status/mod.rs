//! Statuses, pure: the SyncPeer and SyncPolicy statuses from what one pass over a policy
//! observed. Each condition is one function ([`peer::ready`], [`policy::converged`], ...)
//! returning a `metav1.Condition`; [`conditions::apply`] keeps its `lastTransitionTime`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::config::{PeerConfig, SyncConfig};
use crate::hlc::Hlc;
use crate::operator::conditions::{self, reason, Status};
use crate::operator::crd::{EdgeStatus, MemberStatus, SyncPolicy};
use crate::operator::lag::{self, GcReport, Lag, Totals};
use crate::operator::members::Absent;
use crate::operator::node_client::NodeError;
use crate::operator::topology::{Edge, Member, Mode, Plan};
use crate::wire::NodeStatus;
use crate::wire::WatermarkResponse;

pub mod pacing;

/// What one pass observed of a member.
#[derive(Debug)]
pub struct Observed {
    pub member: Member,
    /// Its answer to `/admin/status` (for an external node: to `/sync/watermark`).
    pub node: Result<NodeStatus, NodeError>,
    /// Its config (managed members only).
    pub config: Option<SyncConfig>,
}

/// What an external node's watermark tells of it, as a status: its id and log head; what it
/// applied is unknown (so it holds the GC horizon back) and it reports no peers.
pub fn external_node(w: WatermarkResponse) -> NodeStatus {
    NodeStatus {
        node_id: w.node_id,
        incarnation: w.incarnation,
        watermark: w.hlc,
        applied: BTreeMap::new(),
        gc_horizon: None,
        documents: 0,
        tombstones: 0,
        conflicts: 0,
        superseded: 0,
        checkpoint_pending: false,
        wall_ms: 0,
        max_clock_drift_ms: 0,
        peers: Vec::new(),
        pullers: Vec::new(),
        config_digest: None,
    }
}

/// Whether the node's config is `desired`: compared whole when the config was read, else by
/// the digest its status reports. `false` when neither is known.
pub fn config_in_place(o: &Observed, desired: &SyncConfig) -> bool {
    match (&o.config, o.node.as_ref().ok()) {
        (Some(c), _) => c == desired,
        (None, Some(s)) => s.config_digest.as_deref() == Some(desired.digest().as_str()),
        (None, None) => false,
    }
}

/// Whether the node's peers are those of `desired` (so a config change that alters them
/// calls for a sync now): from the config when it was read, else from the status's peers.
pub fn peers_in_place(o: &Observed, desired: &SyncConfig) -> bool {
    if let Some(c) = &o.config {
        return c.peers == desired.peers;
    }
    let Ok(s) = &o.node else {
        return false;
    };
    let mut have: Vec<PeerConfig> = s
        .peers
        .iter()
        .map(|p| PeerConfig {
            peer_id: p.peer_id.clone(),
            endpoint: p.endpoint.clone(),
            address: p.address,
            direction: p.direction,
            collections: p.collections.clone(),
            exclude_collections: p.exclude_collections.clone(),
        })
        .collect();
    let mut want = desired.peers.clone();
    have.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    want.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    have == want
}

/// One edge's lag, and the receiver's checkpoint in the sender's log it was measured from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeLag {
    pub edge: Edge,
    pub lag: Lag,
    pub checkpoint: Option<Hlc>,
}

/// A member as status shows it, with the condition reason for its error.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberReport {
    /// The SyncPeer it belongs to.
    pub peer: String,
    pub status: MemberStatus,
    /// Set exactly when `status.last_error` is.
    pub error_reason: Option<&'static str>,
}

/// What one pass over a policy observed, for its statuses.
pub struct Observation<'a> {
    pub policy: &'a SyncPolicy,
    /// Selected peers that other policies select too, with those policies' names.
    pub contested: &'a BTreeMap<String, Vec<String>>,
    /// The members, then the selected pods left out, in the order observed.
    pub members: &'a [MemberReport],
    pub edges: &'a [EdgeStatus],
    pub plan: &'a Plan,
    /// Problems met while observing, as (reason, message), in the order met.
    pub problems: &'a [(String, String)],
    /// Stalled edges, as "from → to".
    pub stalled: &'a [String],
    pub gc_horizon: Option<Hlc>,
    pub now: &'a Time,
}

/// `observedGeneration` and time of the conditions being built.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    pub generation: Option<i64>,
    pub now: &'a Time,
}

impl Stamp<'_> {
    fn condition(self, type_: &str, status: bool, reason: &str, message: &str) -> Condition {
        conditions::new(
            type_,
            Status::from(status),
            reason,
            &shorten(message, MAX_MESSAGE_CHARS),
            self.generation,
            self.now,
        )
    }
}

/// The reason for a failed call to a member, from the node's error code.
pub fn node_error_reason(e: &NodeError) -> &'static str {
    if e.is_unreachable() {
        return reason::NODE_UNREACHABLE;
    }
    match e.code() {
        Some("clock_drift") => reason::CLOCK_DRIFT,
        Some("embedding_mismatch") => reason::EMBEDDING_MISMATCH,
        _ => reason::SYNC_FAILED,
    }
}

/// The reason for the sync error a node reports for one of its peers, from its code. Nodes
/// older than `last_error_code` report text only; for them the text the errors render is read.
pub fn peer_error_reason(code: Option<&str>, message: &str) -> &'static str {
    if let Some(code) = code {
        return match code {
            "clock_drift" => reason::CLOCK_DRIFT,
            "embedding_mismatch" => reason::EMBEDDING_MISMATCH,
            "peer_unreachable" => reason::NODE_UNREACHABLE,
            _ => reason::SYNC_FAILED,
        };
    }
    if message.contains("clock drift") {
        reason::CLOCK_DRIFT
    } else if message.contains("embedding") {
        reason::EMBEDDING_MISMATCH
    } else if message.contains("unreachable")
        || message.contains("timed out")
        || message.contains("connection failed")
    {
        reason::NODE_UNREACHABLE
    } else {
        reason::SYNC_FAILED
    }
}

fn time_from_ms(ms: u64) -> Option<Time> {
    Timestamp::from_millisecond(i64::try_from(ms).ok()?)
        .ok()
        .map(|t| conditions::whole_seconds(&Time(t)))
}

/// A member's report from its node's answer and its lag.
pub fn member(o: &Observed, lag: Lag) -> MemberReport {
    let m = &o.member;
    let mut status = MemberStatus {
        pod: m.name.clone(),
        node_id: m.node_id.clone(),
        endpoint: Some(m.endpoint.clone()),
        lag_seconds: lag.seconds(),
        pending_changes: lag.pending(),
        ..Default::default()
    };
    let error_reason = match &o.node {
        Ok(s) => {
            let failing = s
                .peers
                .iter()
                .find_map(|p| Some((p, p.last_error.as_ref()?)));
            status.ready = failing.is_none();
            status.watermark = Some(s.watermark.to_hex());
            status.conflicts = i64::try_from(s.conflicts).unwrap_or(i64::MAX);
            status.last_sync_time = s
                .peers
                .iter()
                .filter_map(|p| p.last_transfer_ms)
                .max()
                .and_then(time_from_ms);
            failing.map(|(p, e)| {
                status.last_error = Some(format!("with {}: {e}", p.peer_id));
                peer_error_reason(p.last_error_code.as_deref(), e)
            })
        }
        Err(e) => {
            status.last_error = Some(e.to_string());
            Some(node_error_reason(e))
        }
    };
    status.last_error = status.last_error.map(|e| shorten(&e, MAX_ERROR_CHARS));
    MemberReport {
        peer: m.peer.clone(),
        status,
        error_reason,
    }
}

/// Longest member error kept in status (a node's error can quote a whole response).
pub const MAX_ERROR_CHARS: usize = 300;
/// Longest condition message (the API allows 32 KiB; status must stay small at any size).
pub const MAX_MESSAGE_CHARS: usize = 2048;
/// Items a condition message names before "and N more".
pub const MESSAGE_ITEMS: usize = 5;
/// SyncPeer status lists this many members at most (the worst).
pub const MAX_MEMBERS_SHOWN: usize = 50;

fn saturating_sum(values: impl Iterator<Item = i64>) -> i64 {
    values.fold(0i64, |acc, v| acc.saturating_add(v.max(0)))
}

/// `s` cut to `max` characters, marked with an ellipsis when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The first [`MESSAGE_ITEMS`] items joined by `sep`, then "and N more": a condition message
/// stays short however many members or edges it is about.
pub fn some_of<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    let shown: Vec<&str> = items
        .iter()
        .take(MESSAGE_ITEMS)
        .map(AsRef::as_ref)
        .collect();
    let mut out = shown.join(sep);
    if items.len() > MESSAGE_ITEMS {
        out.push_str(&format!(" and {} more", items.len() - MESSAGE_ITEMS));
    }
    out
}

/// Members in the order status shows them: not ready first, then with an error, then by lag
/// and pending changes (largest first), then by name.
pub fn worst_first(members: &mut [MemberStatus]) {
    members.sort_by(|a, b| {
        a.ready
            .cmp(&b.ready)
            .then(b.last_error.is_some().cmp(&a.last_error.is_some()))
            .then(b.lag_seconds.cmp(&a.lag_seconds))
            .then(b.pending_changes.cmp(&a.pending_changes))
            .then_with(|| a.pod.cmp(&b.pod))
    });
}

/// The report of a selected pod that is not a member.
pub fn absent(a: &Absent) -> MemberReport {
    MemberReport {
        peer: a.peer.clone(),
        status: MemberStatus {
            pod: a.pod.clone(),
            ready: false,
            last_error: Some("pod is not ready or has no IP; left out of the topology".into()),
            ..Default::default()
        },
        error_reason: Some(reason::SYNC_FAILED),
    }
}

/// The GC horizon over the members: any member that did not answer (or an external one,
/// whose applied HLCs are unknown) holds it back.
pub fn gc_horizon(observed: &[Observed]) -> Option<Hlc> {
    let reports: Vec<GcReport> = observed
        .iter()
        .map(|o| GcReport {
            node_id: o.member.node_id.clone().unwrap_or_default(),
            applied: match (&o.node, o.member.managed) {
                (Ok(s), true) => Some(s.applied.iter().map(|(k, v)| (k.to_hex(), *v)).collect()),
                _ => None,
            },
        })
        .collect();
    lag::gc_horizon(&reports)
}

/// Where an edge's lag is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCursor {
    /// The receiver's checkpoint in the sender's log, as the edge's driver (the puller or the
    /// pusher) reports it.
    pub checkpoint: Option<Hlc>,
    /// The incarnation of the sender's log that checkpoint is a position in.
    pub incarnation: Option<String>,
    /// The collections the edge carries.
    pub collections: Vec<String>,
}

pub fn edge_cursor(edge: &Edge, from: &Observed, to: &Observed) -> EdgeCursor {
    let (driver, other) = match edge.mode {
        Mode::Pull => (to, from),
        Mode::Push => (from, to),
    };
    let entry = driver
        .node
        .as_ref()
        .ok()
        .and_then(|s| s.peers.iter().find(|p| p.peer_id == other.member.name));
    let (checkpoint, incarnation) = match edge.mode {
        Mode::Pull => (
            entry.and_then(|p| p.checkpoint),
            entry.and_then(|p| p.incarnation.clone()),
        ),
        // A push checkpoint is a position in the pusher's own log.
        Mode::Push => (
            entry.and_then(|p| p.push_checkpoint),
            from.node.as_ref().ok().map(|s| s.incarnation.clone()),
        ),
    };
    EdgeCursor {
        checkpoint,
        incarnation,
        collections: entry.map(|p| p.collections.clone()).unwrap_or_default(),
    }
}

pub fn edge_status(e: &EdgeLag) -> EdgeStatus {
    EdgeStatus {
        from: e.edge.from.clone(),
        to: e.edge.to.clone(),
        mode: e.edge.mode.as_str().into(),
        pending_changes: e.lag.pending(),
        lag_seconds: e.lag.seconds(),
    }
}

/// Each member's lag over its incoming edges (members without any are not in the map).
pub fn member_lags(edges: &[EdgeLag]) -> BTreeMap<String, Lag> {
    let mut incoming: BTreeMap<&str, Vec<(&str, Lag)>> = BTreeMap::new();
    for e in edges {
        incoming
            .entry(&e.edge.to)
            .or_default()
            .push((&e.edge.from, e.lag));
    }
    incoming
        .into_iter()
        .map(|(to, from)| (to.to_string(), lag::member_lag(from)))
        .collect()
}

/// The policy's members, one per name (the last reported), by name.
pub fn policy_members(members: &[MemberReport]) -> Vec<&MemberReport> {
    let by_name: BTreeMap<&str, &MemberReport> =
        members.iter().map(|r| (r.status.pod.as_str(), r)).collect();
    by_name.into_values().collect()
}

fn statuses(members: &[&MemberReport]) -> Vec<MemberStatus> {
    members.iter().map(|r| r.status.clone()).collect()
}

/// `Ready` from member counts.
fn readiness(at: Stamp, totals: &Totals, none_message: &str) -> Condition {
    let counts = format!(
        "{} of {} members ready",
        totals.ready_members, totals.members
    );
    let (ok, why, message) = if totals.members == 0 {
        (false, reason::NO_MEMBERS, none_message)
    } else if totals.ready_members == totals.members {
        (true, reason::ALL_MEMBERS_READY, counts.as_str())
    } else {
        (false, reason::MEMBERS_NOT_READY, counts.as_str())
    };
    at.condition(conditions::READY, ok, why, message)
}

fn stalled_message<'a>(stalled: impl IntoIterator<Item = &'a str>) -> String {
    let all: Vec<&str> = stalled.into_iter().collect();
    format!(
        "no progress over three sync intervals on {}",
        some_of(&all, ", ")
    )
}

/// The first member error's reason and every member error, as "member: error".
fn member_errors(members: &[&MemberReport]) -> Option<(&'static str, String)> {
    let failing: Vec<&MemberReport> = members
        .iter()
        .copied()
        .filter(|r| r.status.last_error.is_some())
        .collect();
    let first = failing.first()?;
    let all: Vec<String> = failing
        .iter()
        .filter_map(|r| {
            Some(format!(
                "{}: {}",
                r.status.pod,
                r.status.last_error.as_ref()?
            ))
        })
        .collect();
    Some((
        first.error_reason.unwrap_or(reason::SYNC_FAILED),
        some_of(&all, "; "),
    ))
}

/// A SyncPeer's status and its conditions `Ready`, `Synced` and `Degraded`.
pub mod peer {
    use kube::ResourceExt;

    use super::*;
    use crate::operator::crd::{SyncPeer, SyncPeerStatus};

    /// `peer`'s status in `obs`, from its members (the pods left out after the others).
    pub fn status(obs: &Observation, peer: &SyncPeer) -> SyncPeerStatus {
        let name = peer.name_any();
        let policy = obs.policy.name_any();
        let by_name: BTreeMap<&str, &MemberReport> = obs
            .members
            .iter()
            .map(|r| (r.status.pod.as_str(), r))
            .collect();
        let members: Vec<&MemberReport> = obs
            .members
            .iter()
            .filter(|r| r.peer == name)
            .map(|r| by_name[r.status.pod.as_str()])
            .collect();
        let mut member_statuses = statuses(&members);
        let totals = lag::aggregate(&member_statuses);
        let old = peer.status.clone().unwrap_or_default();
        let stalled: Vec<&str> = obs
            .stalled
            .iter()
            .filter(|s| {
                member_statuses
                    .iter()
                    .any(|m| s.ends_with(&format!("→ {}", m.pod)))
            })
            .map(String::as_str)
            .collect();
        let pending = saturating_sum(member_statuses.iter().map(|m| m.pending_changes));
        worst_first(&mut member_statuses);
        let omitted = member_statuses.len().saturating_sub(MAX_MEMBERS_SHOWN);
        member_statuses.truncate(MAX_MEMBERS_SHOWN);
        let mut st = SyncPeerStatus {
            members: member_statuses,
            member_count: totals.members,
            omitted_members: i32::try_from(omitted).unwrap_or(i32::MAX),
            ready_members: totals.ready_members,
            watermark: totals.watermark.clone(),
            lag_seconds: totals.max_lag_seconds,
            conflicts: totals.conflicts,
            policy: Some(policy.clone()),
            conditions: old.conditions,
            observed_generation: peer.metadata.generation,
        };
        let at = Stamp {
            generation: peer.metadata.generation,
            now: obs.now,
        };
        let contested_by = obs.contested.get(&name).map(Vec::as_slice);
        let conditions = [
            ready(at, &totals, contested_by),
            synced(at, &stalled, pending, totals.max_lag_seconds),
            degraded(at, &policy, contested_by, &stalled, &members),
        ];
        for c in conditions {
            conditions::apply(&mut st.conditions, c);
        }
        st
    }

    /// `Ready`: every member answered; never for a peer another policy selects too.
    pub fn ready(at: Stamp, totals: &Totals, contested_by: Option<&[String]>) -> Condition {
        match contested_by {
            Some(others) => at.condition(
                conditions::READY,
                false,
                reason::SELECTED_BY_TWO_POLICIES,
                &format!("also selected by {}", others.join(", ")),
            ),
            None => readiness(at, totals, "no ready pod matches the selector"),
        }
    }

    /// `Synced`: no change towards the members has been pending for a second or more
    /// (`stalled`: the members' stalled incoming edges). A change younger than that is in
    /// flight: with live sync every write is, for a few milliseconds, and a condition that
    /// flipped with each one would say nothing and cost two status writes per SyncPeer.
    pub fn synced(at: Stamp, stalled: &[&str], pending: i64, max_lag_seconds: i64) -> Condition {
        if !stalled.is_empty() {
            at.condition(
                conditions::SYNCED,
                false,
                reason::STALLED,
                &stalled_message(stalled.iter().copied()),
            )
        } else if pending > 0 && max_lag_seconds > 0 {
            at.condition(
                conditions::SYNCED,
                false,
                reason::LAGGING,
                &format!("{pending} changes pending, max lag {max_lag_seconds}s"),
            )
        } else if pending > 0 {
            at.condition(
                conditions::SYNCED,
                true,
                reason::SYNCED,
                &format!("{pending} changes in flight, none pending for a second"),
            )
        } else {
            at.condition(
                conditions::SYNCED,
                true,
                reason::SYNCED,
                "no changes pending",
            )
        }
    }

    /// `Degraded`: contested, stalled, or a member reports an error.
    pub fn degraded(
        at: Stamp,
        policy: &str,
        contested_by: Option<&[String]>,
        stalled: &[&str],
        members: &[&MemberReport],
    ) -> Condition {
        let (why, message) = if let Some(others) = contested_by {
            (
                reason::SELECTED_BY_TWO_POLICIES,
                format!("selected by {policy} and {}", others.join(", ")),
            )
        } else if !stalled.is_empty() {
            (reason::STALLED, stalled_message(stalled.iter().copied()))
        } else if let Some(errors) = member_errors(members) {
            errors
        } else {
            return at.condition(
                conditions::DEGRADED,
                false,
                reason::HEALTHY,
                "all members healthy",
            );
        };
        at.condition(conditions::DEGRADED, true, why, &message)
    }
}

/// A SyncPolicy's status and its conditions `Ready`, `Converged` and `Degraded`.
pub mod policy {
    use super::*;
    use crate::operator::crd::SyncPolicyStatus;

    /// The policy's status in `obs`.
    pub fn status(obs: &Observation) -> SyncPolicyStatus {
        let policy = obs.policy;
        let members = policy_members(obs.members);
        let member_statuses = statuses(&members);
        let totals = lag::aggregate_policy(&member_statuses, obs.edges);
        let edges = lag::summarize_edges(obs.edges, lag::WORST_EDGES);
        let old = policy.status.clone().unwrap_or_default();
        let mut st = SyncPolicyStatus {
            members: totals.members,
            ready_members: totals.ready_members,
            edges: edges.worst,
            edge_count: edges.count,
            lagging_edges: edges.lagging,
            max_lag_seconds: totals.max_lag_seconds,
            p99_lag_seconds: edges.p99_lag_seconds,
            conflicts: totals.conflicts,
            gc_horizon: obs.gc_horizon.map(Hlc::to_hex),
            last_sync_time: member_statuses
                .iter()
                .filter_map(|m| m.last_sync_time.clone())
                .max(),
            conditions: old.conditions,
            observed_generation: policy.metadata.generation,
        };
        let at = Stamp {
            generation: policy.metadata.generation,
            now: obs.now,
        };
        let pending = saturating_sum(obs.edges.iter().map(|e| e.pending_changes));
        let converged = converged(
            at,
            policy.spec.paused,
            obs.plan,
            obs.stalled,
            pending,
            &totals,
        );
        let degraded = degraded(
            at,
            &problems(obs),
            !obs.stalled.is_empty(),
            &converged.message,
            &members,
        );
        for c in [ready(at, &totals), converged, degraded] {
            conditions::apply(&mut st.conditions, c);
        }
        st
    }

    /// Every problem of the pass, as (reason, message): those met while observing, the
    /// plan's, and the contested peers.
    pub fn problems(obs: &Observation) -> Vec<(String, String)> {
        let mut all = obs.problems.to_vec();
        all.extend(
            obs.plan
                .problems
                .iter()
                .map(|p| (p.reason().to_string(), p.to_string())),
        );
        all.extend(obs.contested.iter().map(|(peer, others)| {
            (
                reason::SELECTED_BY_TWO_POLICIES.to_string(),
                format!(
                    "SyncPeer {peer} is also selected by {}; it takes part in neither until one selector changes",
                    others.join(", ")
                ),
            )
        }));
        all
    }

    /// `Ready`: every member answered.
    pub fn ready(at: Stamp, totals: &Totals) -> Condition {
        readiness(at, totals, "no members selected")
    }

    /// `Converged`: syncing, connected, not stalled, nothing pending and every member ready.
    pub fn converged(
        at: Stamp,
        paused: bool,
        plan: &Plan,
        stalled: &[String],
        pending: i64,
        totals: &Totals,
    ) -> Condition {
        let all_ready = totals.members > 0 && totals.ready_members == totals.members;
        let (ok, why, message) = if paused {
            (false, reason::PAUSED, "sync is paused".to_string())
        } else if !plan.connectivity.strongly_connected() {
            let problems: Vec<String> = plan.problems.iter().map(|p| p.to_string()).collect();
            (
                false,
                reason::NOT_STRONGLY_CONNECTED,
                some_of(&problems, "; "),
            )
        } else if !stalled.is_empty() {
            (
                false,
                reason::STALLED,
                stalled_message(stalled.iter().map(String::as_str)),
            )
        } else if pending > 0 || !all_ready {
            (
                false,
                reason::LAGGING,
                format!(
                    "{pending} changes pending, max lag {}s, {} of {} members ready",
                    totals.max_lag_seconds, totals.ready_members, totals.members
                ),
            )
        } else {
            (
                true,
                reason::CONVERGED,
                "every member holds every change".to_string(),
            )
        };
        at.condition(conditions::CONVERGED, ok, why, &message)
    }

    /// `Degraded`: a problem (the first one's reason, every message), a stall (with the
    /// `Converged` message), or a member error.
    pub fn degraded(
        at: Stamp,
        problems: &[(String, String)],
        stalled: bool,
        converged_message: &str,
        members: &[&MemberReport],
    ) -> Condition {
        let (why, message) = if let Some((first, _)) = problems.first() {
            let all: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
            (first.as_str(), some_of(&all, "; "))
        } else if stalled {
            (reason::STALLED, converged_message.to_string())
        } else if let Some(errors) = member_errors(members) {
            errors
        } else {
            return at.condition(conditions::DEGRADED, false, reason::HEALTHY, "no problems");
        };
        at.condition(conditions::DEGRADED, true, why, &message)
    }
}

#[cfg(test)]
mod tests;
