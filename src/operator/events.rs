//! Events, pure: which events one pass emits, decided from the statuses before and after it,
//! so that an event marks a transition and is never repeated while nothing changes.

use std::collections::{BTreeMap, BTreeSet};

use crate::operator::conditions::{self, reason};
use crate::operator::crd::{SyncPeerStatus, SyncPolicyStatus};
use crate::operator::status::MemberReport;
use crate::operator::topology::Warning;

/// An event to publish on the object whose statuses were compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

fn note(warning: bool, reason: &'static str, message: String) -> Note {
    Note {
        warning,
        reason,
        message,
    }
}

/// A SyncPeer's members that joined and left.
pub fn peer(old: &SyncPeerStatus, new: &SyncPeerStatus) -> Vec<Note> {
    let before: BTreeSet<&str> = old.members.iter().map(|m| m.pod.as_str()).collect();
    let after: BTreeSet<&str> = new.members.iter().map(|m| m.pod.as_str()).collect();
    let added = after
        .difference(&before)
        .map(|m| note(false, "MemberAdded", format!("member {m} joined")));
    let removed = before
        .difference(&after)
        .map(|m| note(false, "MemberRemoved", format!("member {m} left")));
    added.chain(removed).collect()
}

/// A SyncPolicy's new conflicts, a changed set of connected members, member errors not seen
/// before (`seen` remembers the last pass's, per member) and a new stall.
pub fn policy(
    old: &SyncPolicyStatus,
    new: &SyncPolicyStatus,
    members: &[&MemberReport],
    seen: &mut BTreeMap<String, String>,
    stalled: &[String],
) -> Vec<Note> {
    let mut notes = Vec::new();
    if new.conflicts > old.conflicts {
        notes.push(note(
            true,
            "ConflictsDetected",
            format!(
                "{} conflicts recorded (was {})",
                new.conflicts, old.conflicts
            ),
        ));
    }
    let connected = |s: &SyncPolicyStatus| -> BTreeSet<String> {
        s.edges
            .iter()
            .flat_map(|e| [e.from.clone(), e.to.clone()])
            .collect()
    };
    let (before, after) = (connected(old), connected(new));
    if before != after && !old.edges.is_empty() {
        notes.push(note(
            false,
            "TopologyChanged",
            format!("{} edges among {} members", new.edges.len(), after.len()),
        ));
    }
    let mut errors = BTreeMap::new();
    for r in members {
        let Some(e) = &r.status.last_error else {
            continue;
        };
        if seen.get(&r.status.pod) != Some(e) {
            let why = if r.error_reason == Some(reason::CLOCK_DRIFT) {
                "ClockDrift"
            } else {
                "SyncFailed"
            };
            notes.push(note(true, why, format!("{}: {e}", r.status.pod)));
        }
        errors.insert(r.status.pod.clone(), e.clone());
    }
    *seen = errors;
    let was_stalled = conditions::find(&old.conditions, conditions::CONVERGED)
        .is_some_and(|c| c.reason == reason::STALLED);
    if !stalled.is_empty() && !was_stalled {
        notes.push(note(
            true,
            "Stalled",
            format!(
                "no progress over three sync intervals on {}",
                stalled.join(", ")
            ),
        ));
    }
    notes
}

/// A plan's warnings as Warning events, each told once per change: `told` remembers the last
/// pass's messages, so a warning is told again only when its message changes (e.g. the member
/// count) or after it went away.
pub fn warnings(warnings: &[Warning], told: &mut BTreeSet<String>) -> Vec<Note> {
    let now: BTreeSet<String> = warnings.iter().map(Warning::to_string).collect();
    let notes = warnings
        .iter()
        .filter(|w| !told.contains(&w.to_string()))
        .map(|w| note(true, w.reason(), w.to_string()))
        .collect();
    *told = now;
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::{EdgeStatus, MemberStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn reasons(notes: &[Note]) -> Vec<&str> {
        notes.iter().map(|n| n.reason).collect()
    }

    fn peer_with(pods: &[&str]) -> SyncPeerStatus {
        SyncPeerStatus {
            members: pods
                .iter()
                .map(|p| MemberStatus {
                    pod: p.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn edge(from: &str, to: &str) -> EdgeStatus {
        EdgeStatus {
            from: from.into(),
            to: to.into(),
            mode: "Pull".into(),
            pending_changes: 0,
            lag_seconds: 0,
        }
    }

    fn failing(pod: &str, error: &str, reason: &'static str) -> MemberReport {
        MemberReport {
            peer: "p".into(),
            status: MemberStatus {
                pod: pod.into(),
                last_error: Some(error.into()),
                ..Default::default()
            },
            error_reason: Some(reason),
        }
    }

    #[test]
    fn members_joining_and_leaving_a_peer() {
        let notes = peer(&peer_with(&["a", "b"]), &peer_with(&["b", "c"]));
        assert_eq!(
            notes,
            [
                note(false, "MemberAdded", "member c joined".into()),
                note(false, "MemberRemoved", "member a left".into()),
            ]
        );
        assert!(peer(&peer_with(&["a"]), &peer_with(&["a"])).is_empty());
    }

    #[test]
    fn new_conflicts_and_a_changed_topology() {
        let mut seen = BTreeMap::new();
        let old = SyncPolicyStatus {
            conflicts: 2,
            edges: vec![edge("a", "b")],
            ..Default::default()
        };
        let new = SyncPolicyStatus {
            conflicts: 5,
            edges: vec![edge("a", "b"), edge("b", "c")],
            ..Default::default()
        };
        let notes = policy(&old, &new, &[], &mut seen, &[]);
        assert_eq!(reasons(&notes), ["ConflictsDetected", "TopologyChanged"]);
        assert_eq!(notes[0].message, "5 conflicts recorded (was 2)");
        assert_eq!(notes[1].message, "2 edges among 3 members");
        assert!(notes[0].warning && !notes[1].warning);
        // The same again, or a first topology: nothing.
        assert!(policy(&new, &new, &[], &mut seen, &[]).is_empty());
        let first = SyncPolicyStatus::default();
        assert!(
            policy(&first, &new, &[], &mut seen, &[]).len() == 1,
            "only the conflicts"
        );
    }

    #[test]
    fn a_member_error_is_told_once_per_change() {
        let mut seen = BTreeMap::new();
        let none = SyncPolicyStatus::default();
        let a = failing("a", "with b: clock drift: ahead", reason::CLOCK_DRIFT);
        let b = failing("b", "GET x: timed out", reason::NODE_UNREACHABLE);
        let notes = policy(&none, &none, &[&a, &b], &mut seen, &[]);
        assert_eq!(
            notes,
            [
                note(true, "ClockDrift", "a: with b: clock drift: ahead".into()),
                note(true, "SyncFailed", "b: GET x: timed out".into()),
            ]
        );
        assert!(policy(&none, &none, &[&a, &b], &mut seen, &[]).is_empty());
        let b2 = failing(
            "b",
            "GET x: unreachable (refused)",
            reason::NODE_UNREACHABLE,
        );
        assert_eq!(
            reasons(&policy(&none, &none, &[&a, &b2], &mut seen, &[])),
            ["SyncFailed"]
        );
        // Recovered, then failing again: told again.
        assert!(policy(&none, &none, &[], &mut seen, &[]).is_empty());
        assert_eq!(
            reasons(&policy(&none, &none, &[&a], &mut seen, &[])),
            ["ClockDrift"]
        );
    }

    #[test]
    fn a_large_mesh_is_told_once_per_change() {
        let mut told = BTreeSet::new();
        let large = |members| Warning::LargeMesh {
            members,
            edges: members * (members - 1),
        };
        let notes = warnings(&[large(40)], &mut told);
        assert_eq!(reasons(&notes), ["LargeMesh"]);
        assert!(notes[0].warning);
        assert!(
            notes[0].message.contains("1560 edges"),
            "{}",
            notes[0].message
        );
        assert!(
            notes[0]
                .message
                .contains("topology: {type: Sparse, fanout: 3}"),
            "{}",
            notes[0].message
        );
        assert!(warnings(&[large(40)], &mut told).is_empty());
        assert_eq!(reasons(&warnings(&[large(41)], &mut told)), ["LargeMesh"]);
        // Gone (scaled down or switched to Sparse), then back: told again.
        assert!(warnings(&[], &mut told).is_empty());
        assert_eq!(reasons(&warnings(&[large(41)], &mut told)), ["LargeMesh"]);
    }

    #[test]
    fn a_stall_is_told_when_it_starts() {
        let mut seen = BTreeMap::new();
        let stalled = ["a → b".to_string()];
        let fine = SyncPolicyStatus::default();
        let notes = policy(&fine, &fine, &[], &mut seen, &stalled);
        assert_eq!(
            notes,
            [note(
                true,
                "Stalled",
                "no progress over three sync intervals on a → b".into()
            )]
        );
        let mut was_stalled = SyncPolicyStatus::default();
        conditions::set(
            &mut was_stalled.conditions,
            conditions::CONVERGED,
            conditions::Status::False,
            reason::STALLED,
            "",
            None,
            &Time(Timestamp::UNIX_EPOCH),
        );
        assert!(policy(&was_stalled, &was_stalled, &[], &mut seen, &stalled).is_empty());
        assert!(policy(&fine, &fine, &[], &mut seen, &[]).is_empty());
    }
}
