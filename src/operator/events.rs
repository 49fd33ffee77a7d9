//! Events, pure: which events one pass emits, decided from the statuses before and after it,
//! so that an event marks a transition and is never repeated while nothing changes.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use crate::operator::conditions::{self, reason};
use crate::operator::crd::SyncPolicyStatus;
use crate::operator::status::MemberReport;
use crate::operator::topology::{Edge, Warning};

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

/// A SyncPeer's members that joined and left, by name: `before` is `None` when the previous
/// set is unknown (first pass after a start with a status that lists only some members).
pub fn peer(before: Option<&BTreeSet<String>>, after: &BTreeSet<String>) -> Vec<Note> {
    let Some(before) = before else {
        return Vec::new();
    };
    let added = after
        .difference(before)
        .map(|m| note(false, "MemberAdded", format!("member {m} joined")));
    let removed = before
        .difference(after)
        .map(|m| note(false, "MemberRemoved", format!("member {m} left")));
    let mut notes: Vec<Note> = added.chain(removed).collect();
    if notes.len() > MAX_NOTES {
        let more = notes.len() - MAX_NOTES;
        notes.truncate(MAX_NOTES);
        notes.push(note(
            false,
            "MembersChanged",
            format!("{more} more members joined or left"),
        ));
    }
    notes
}

/// Events of one kind a pass emits at most, before one that counts the rest.
pub const MAX_NOTES: usize = 5;

/// The plan's edges as one number, to tell a changed topology from the same one.
pub fn topology_fingerprint(edges: &[Edge]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    edges.hash(&mut h);
    h.finish()
}

/// `TopologyChanged` when the edges differ from the last pass's (`before`: `None` on the
/// first pass, which tells nothing).
pub fn topology(before: Option<u64>, after: u64, edges: usize, members: usize) -> Option<Note> {
    (before.is_some_and(|b| b != after)).then(|| {
        note(
            false,
            "TopologyChanged",
            format!("{edges} edges among {members} members"),
        )
    })
}

/// A SyncPolicy's new conflicts, member errors not seen before (`seen` remembers the last pass's, per member) and a new stall.
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
    let mut errors = BTreeMap::new();
    let mut untold = 0;
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
            if notes.len() < MAX_NOTES {
                notes.push(note(true, why, format!("{}: {e}", r.status.pod)));
            } else {
                untold += 1;
            }
        }
        errors.insert(r.status.pod.clone(), e.clone());
    }
    if untold > 0 {
        notes.push(note(
            true,
            "SyncFailed",
            format!("{untold} more members report new errors; see the SyncPeers' status"),
        ));
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
                crate::operator::status::some_of(stalled, ", ")
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
    use crate::operator::crd::MemberStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn reasons(notes: &[Note]) -> Vec<&str> {
        notes.iter().map(|n| n.reason).collect()
    }

    fn names(pods: &[&str]) -> BTreeSet<String> {
        pods.iter().map(|p| p.to_string()).collect()
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
        let notes = peer(Some(&names(&["a", "b"])), &names(&["b", "c"]));
        assert_eq!(
            notes,
            [
                note(false, "MemberAdded", "member c joined".into()),
                note(false, "MemberRemoved", "member a left".into()),
            ]
        );
        assert!(peer(Some(&names(&["a"])), &names(&["a"])).is_empty());
        assert!(
            peer(None, &names(&["a"])).is_empty(),
            "unknown before: nothing"
        );
        // Many at once: a few, then one that counts the rest.
        let many: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let notes = peer(Some(&names(&[])), &names(&many));
        assert_eq!(notes.len(), MAX_NOTES + 1);
        assert_eq!(notes[MAX_NOTES].message, "35 more members joined or left");
    }

    #[test]
    fn new_conflicts_and_a_changed_topology() {
        let mut seen = BTreeMap::new();
        let old = SyncPolicyStatus {
            conflicts: 2,
            ..Default::default()
        };
        let new = SyncPolicyStatus {
            conflicts: 5,
            ..Default::default()
        };
        let notes = policy(&old, &new, &[], &mut seen, &[]);
        assert_eq!(reasons(&notes), ["ConflictsDetected"]);
        assert_eq!(notes[0].message, "5 conflicts recorded (was 2)");
        assert!(notes[0].warning);
        assert!(policy(&new, &new, &[], &mut seen, &[]).is_empty());

        let edge = |from: &str, to: &str| Edge {
            from: from.into(),
            to: to.into(),
            mode: crate::operator::topology::Mode::Pull,
        };
        let one = topology_fingerprint(&[edge("a", "b")]);
        let two = topology_fingerprint(&[edge("a", "b"), edge("b", "c")]);
        let changed = topology(Some(one), two, 2, 3).expect("a changed topology is told");
        assert_eq!(changed.reason, "TopologyChanged");
        assert_eq!(changed.message, "2 edges among 3 members");
        assert!(!changed.warning);
        assert_eq!(topology(Some(two), two, 2, 3), None, "the same again");
        assert_eq!(topology(None, two, 2, 3), None, "a first topology");
    }

    #[test]
    fn many_new_member_errors_are_told_in_a_few_events() {
        let mut seen = BTreeMap::new();
        let none = SyncPolicyStatus::default();
        let all: Vec<MemberReport> = (0..30)
            .map(|i| {
                failing(
                    &format!("m{i}"),
                    "GET x: timed out",
                    reason::NODE_UNREACHABLE,
                )
            })
            .collect();
        let refs: Vec<&MemberReport> = all.iter().collect();
        let notes = policy(&none, &none, &refs, &mut seen, &[]);
        assert_eq!(notes.len(), MAX_NOTES + 1);
        assert!(notes[MAX_NOTES].message.starts_with("25 more members"));
        assert!(policy(&none, &none, &refs, &mut seen, &[]).is_empty());
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
