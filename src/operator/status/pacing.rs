//! Which SyncPeer status writes a pass makes. A change someone acts on (a condition's status
//! or reason, readiness, membership, an error, the generation) is written in the pass that
//! sees it. A change of progress figures only (watermarks, lag, pending changes, conflicts,
//! last sync time, the wording of a condition that did not change) is written for a bounded
//! number of SyncPeers per pass, those written longest ago first, like a kubelet's status
//! report frequency: while changes spread through a large policy every SyncPeer's figures move
//! on every pass, and writing them all each pass is what made such a pass slow.

use std::time::Instant;

use crate::operator::crd::SyncPeerStatus;

/// Every SyncPeer with new figures is written within this many passes.
pub const ROUNDS: usize = 5;
/// Progress-only writes a pass may always make (a small policy is never held back).
pub const MIN_PROGRESS_WRITES: usize = 4;

/// What a pass does with one SyncPeer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The status in the API is the one computed.
    None,
    /// Only progress figures differ: written when its turn comes.
    Progress,
    /// Something else differs: written now.
    Significant,
}

/// How `new` differs from `old` (the status the API holds; `None` before the first write).
pub fn change(old: Option<&SyncPeerStatus>, new: &SyncPeerStatus) -> Change {
    match old {
        Some(old) if old == new => Change::None,
        Some(old) if shape(old) == shape(new) => Change::Progress,
        _ => Change::Significant,
    }
}

/// The status without its progress figures.
fn shape(st: &SyncPeerStatus) -> SyncPeerStatus {
    let mut s = st.clone();
    s.watermark = None;
    s.lag_seconds = 0;
    s.conflicts = 0;
    if s.omitted_members > 0 {
        // A capped list shows the worst members, so which ones it shows moves with their lag;
        // the counts stay.
        s.members.clear();
    }
    for m in &mut s.members {
        m.watermark = None;
        m.lag_seconds = 0;
        m.pending_changes = 0;
        m.conflicts = 0;
        m.last_sync_time = None;
    }
    // Sorted worst first, so the order moves with the lag too.
    s.members.sort_by(|a, b| a.pod.cmp(&b.pod));
    for c in &mut s.conditions {
        c.message.clear();
    }
    s
}

/// Progress-only writes allowed in one pass over a policy selecting `peers` SyncPeers: enough
/// that each is written within [`ROUNDS`] passes.
pub fn progress_budget(peers: usize) -> usize {
    peers.div_ceil(ROUNDS).max(MIN_PROGRESS_WRITES)
}

/// The `budget` SyncPeers, of those with progress to write, written longest ago (never
/// written first; then by name, so the choice is stable).
pub fn pick<K: Ord + Clone>(waiting: &[(K, Option<Instant>)], budget: usize) -> Vec<K> {
    let mut order: Vec<&(K, Option<Instant>)> = waiting.iter().collect();
    order.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    order
        .into_iter()
        .take(budget)
        .map(|w| w.0.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use proptest::prelude::*;

    use super::*;
    use crate::operator::crd::MemberStatus;

    fn member(pod: &str, lag: i64) -> MemberStatus {
        MemberStatus {
            pod: pod.into(),
            ready: true,
            watermark: Some(format!("{lag:016x}")),
            lag_seconds: lag,
            pending_changes: lag * 2,
            conflicts: lag,
            last_sync_time: Some(Time(Timestamp::from_second(1_000 + lag).unwrap())),
            ..Default::default()
        }
    }

    fn synced(status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: "Synced".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::from_second(1_000).unwrap()),
        }
    }

    fn status(lags: &[(&str, i64)], condition: Condition) -> SyncPeerStatus {
        let members: Vec<MemberStatus> = lags.iter().map(|(p, l)| member(p, *l)).collect();
        SyncPeerStatus {
            member_count: members.len() as i32,
            ready_members: members.len() as i32,
            watermark: members.iter().filter_map(|m| m.watermark.clone()).max(),
            lag_seconds: lags.iter().map(|l| l.1).max().unwrap_or(0),
            conflicts: lags.iter().map(|l| l.1).sum(),
            members,
            conditions: vec![condition],
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    fn lagging(n: i64) -> Condition {
        synced("False", "Lagging", &format!("{n} changes pending"))
    }

    #[test]
    fn moving_figures_and_reordered_members_are_progress() {
        let old = status(&[("a", 3), ("b", 1)], lagging(8));
        // Lag moved from a to b, so the worst-first order flipped; the message counts anew.
        let new = status(&[("b", 5), ("a", 0)], lagging(10));
        assert_eq!(change(Some(&old), &new), Change::Progress);
        assert_eq!(change(Some(&old), &old.clone()), Change::None);
    }

    #[test]
    fn conditions_readiness_membership_and_errors_are_written_at_once() {
        let old = status(&[("a", 3), ("b", 1)], lagging(8));
        let synced_now = status(&[("a", 0), ("b", 0)], synced("True", "Synced", "none"));
        assert_eq!(change(Some(&old), &synced_now), Change::Significant);
        let mut not_ready = old.clone();
        not_ready.members[1].ready = false;
        not_ready.ready_members = 1;
        assert_eq!(change(Some(&old), &not_ready), Change::Significant);
        let mut error = old.clone();
        error.members[0].last_error = Some("with x: connection refused".into());
        assert_eq!(change(Some(&old), &error), Change::Significant);
        let joined = status(&[("a", 3), ("b", 1), ("c", 0)], lagging(8));
        assert_eq!(change(Some(&old), &joined), Change::Significant);
        let mut generation = old.clone();
        generation.observed_generation = Some(2);
        assert_eq!(change(Some(&old), &generation), Change::Significant);
        assert_eq!(change(None, &old), Change::Significant);
    }

    #[test]
    fn a_capped_list_showing_other_members_is_progress() {
        let mut old = status(&[("a", 3), ("b", 1)], lagging(8));
        old.member_count = 60;
        old.ready_members = 60;
        old.omitted_members = 58;
        let mut new = old.clone();
        new.members = vec![member("c", 9), member("a", 2)];
        assert_eq!(change(Some(&old), &new), Change::Progress);
        new.ready_members = 59;
        assert_eq!(change(Some(&old), &new), Change::Significant);
    }

    #[test]
    fn a_small_policy_writes_every_progress_change() {
        assert_eq!(progress_budget(1), MIN_PROGRESS_WRITES);
        assert_eq!(progress_budget(20), 4);
        assert_eq!(progress_budget(21), 5);
        let t0 = Instant::now();
        let waiting = vec![("a", Some(t0)), ("b", None), ("c", Some(t0))];
        assert_eq!(pick(&waiting, 4), vec!["b", "a", "c"]);
        assert_eq!(pick(&waiting, 1), vec!["b"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// However many SyncPeers a policy selects and whichever have new figures in a pass,
        /// a pass writes at most the budget, and a SyncPeer whose figures keep moving is
        /// written within ROUNDS passes.
        #[test]
        fn progress_writes_are_bounded_and_none_starves(
            peers in 1usize..120,
            passes in prop::collection::vec(prop::collection::vec(any::<bool>(), 120), 1..30),
        ) {
            let budget = progress_budget(peers);
            let t0 = Instant::now();
            let mut written: BTreeMap<usize, Instant> = BTreeMap::new();
            // Passes since each SyncPeer's figures first differed from what was written.
            let mut behind: BTreeMap<usize, usize> = BTreeMap::new();
            for (pass, moved) in passes.iter().enumerate() {
                let now = t0 + Duration::from_secs(pass as u64 + 1);
                for p in (0..peers).filter(|p| moved[*p]) {
                    behind.entry(p).or_insert(0);
                }
                let waiting: Vec<(usize, Option<Instant>)> =
                    behind.keys().map(|p| (*p, written.get(p).copied())).collect();
                let chosen = pick(&waiting, budget);
                prop_assert!(chosen.len() <= budget);
                prop_assert_eq!(chosen.len(), waiting.len().min(budget));
                for p in chosen {
                    written.insert(p, now);
                    behind.remove(&p);
                }
                for (p, n) in behind.iter_mut() {
                    *n += 1;
                    prop_assert!(*n < ROUNDS, "SyncPeer {} waited {} passes", p, n);
                }
            }
        }
    }
}
