//! Lag arithmetic, pure: from the nodes' own logs and checkpoints to the numbers in status.
//!
//! The sender of an edge knows how far its receiver is: for "B pulls from A", A remembers the
//! `since` of B's latest pull (B's checkpoint in A's log); for "A pushes to B", A holds the push
//! checkpoint. So A's `/admin/status` reports, per receiver, `{"pending": n, "oldest": "<hlc
//! hex>"}`; `pendingChanges` is `n` and `lagSeconds` is the age of that oldest entry (0 when
//! nothing is pending). One status call per node answers every edge it serves. Nodes that
//! predate those fields are asked `GET /admin/backlog?since=<B's checkpoint>` instead.

use std::collections::{BTreeMap, BTreeSet};

use crate::hlc::Hlc;
use crate::model::NodeId;
use crate::operator::crd::{EdgeStatus, MemberStatus};
use crate::operator::topology::Mode;
use crate::wire::{Backlog, NodeStatus};

/// A member is `Stalled` after this many sync intervals with changes pending and no progress.
pub const STALL_INTERVALS: u64 = 3;

/// Lag of one edge (or one member).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lag {
    pub pending_changes: u64,
    /// Age of the oldest pending change in milliseconds (0 when nothing is pending).
    pub lag_ms: u64,
}

impl Lag {
    pub const ZERO: Lag = Lag {
        pending_changes: 0,
        lag_ms: 0,
    };

    /// Whole seconds, as status shows them.
    pub fn seconds(&self) -> i64 {
        i64::try_from(self.lag_ms / 1000).unwrap_or(i64::MAX)
    }

    /// `pending_changes` as status stores it.
    pub fn pending(&self) -> i64 {
        i64::try_from(self.pending_changes).unwrap_or(i64::MAX)
    }
}

/// Lag of the edge "B pulls from A" (or "A pushes to B") from A's backlog answer at `now_ms`.
/// A pending entry stamped in the future (clock skew) counts as age 0 rather than wrapping;
/// a backlog without an `oldest` has unknown age and counts as 0 as well.
pub fn edge_lag(backlog: &Backlog, now_ms: u64) -> Lag {
    if backlog.pending == 0 {
        return Lag::ZERO;
    }
    Lag {
        pending_changes: backlog.pending,
        lag_ms: backlog.oldest.map_or(0, |oldest| oldest.age_ms(now_ms)),
    }
}

/// What the sender `from` reports about the edge to the member named `to` (node id `to_node`),
/// carried as `mode`: for a pull, the puller entry with `to_node`; for a push, the push backlog
/// of its peer entry `to`. `None` when the sender does not report it (a node older than these
/// fields, or a puller that has not asked since the sender started).
pub fn served_backlog(
    from: &NodeStatus,
    mode: Mode,
    to: &str,
    to_node: Option<NodeId>,
) -> Option<Backlog> {
    match mode {
        Mode::Pull => {
            let id = to_node?;
            from.pullers
                .iter()
                .find(|p| p.node_id == id)
                .map(|p| p.backlog)
        }
        Mode::Push => from
            .peers
            .iter()
            .find(|p| p.peer_id == to)
            .and_then(|p| p.push_backlog),
    }
}

/// Whether the sender's status alone shows nothing pending on an edge the sender does not
/// report: its log is empty, or the receiver's `checkpoint` in it is at its head (`incarnation`
/// is the sender's incarnation that checkpoint belongs to). Spares the `/admin/backlog` call
/// for a puller the sender cannot name, one that pulls from zero.
pub fn nothing_pending(
    sender: &NodeStatus,
    checkpoint: Option<Hlc>,
    incarnation: Option<&str>,
) -> bool {
    sender.watermark == Hlc::ZERO
        || (incarnation == Some(sender.incarnation.as_str())
            && checkpoint.is_some_and(|c| c >= sender.watermark))
}

/// A member's lag from its incoming edges `(source member, lag)`. A pull and a push from the
/// same source carry the same log, so each source counts once (the larger); pending changes are
/// summed over sources (the entries still to transfer), the lag is the largest.
pub fn member_lag<'a>(incoming: impl IntoIterator<Item = (&'a str, Lag)>) -> Lag {
    let mut per_source: BTreeMap<&str, Lag> = BTreeMap::new();
    for (src, lag) in incoming {
        let e = per_source.entry(src).or_default();
        e.pending_changes = e.pending_changes.max(lag.pending_changes);
        e.lag_ms = e.lag_ms.max(lag.lag_ms);
    }
    per_source.values().fold(Lag::ZERO, |acc, l| Lag {
        pending_changes: acc.pending_changes.saturating_add(l.pending_changes),
        lag_ms: acc.lag_ms.max(l.lag_ms),
    })
}

/// Numbers for the status of a SyncPeer (over its members) or a SyncPolicy (over all members).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub members: i32,
    pub ready_members: i32,
    pub max_lag_seconds: i64,
    pub conflicts: i64,
    /// Highest member watermark (HLC hex).
    pub watermark: Option<String>,
}

/// Aggregates member statuses: count, ready count, max lag, summed conflicts, max watermark.
pub fn aggregate(members: &[MemberStatus]) -> Totals {
    Totals {
        members: i32::try_from(members.len()).unwrap_or(i32::MAX),
        ready_members: i32::try_from(members.iter().filter(|m| m.ready).count())
            .unwrap_or(i32::MAX),
        max_lag_seconds: members
            .iter()
            .map(|m| m.lag_seconds)
            .max()
            .unwrap_or(0)
            .max(0),
        conflicts: members
            .iter()
            .map(|m| m.conflicts.max(0))
            .fold(0i64, i64::saturating_add),
        watermark: max_watermark(members.iter().filter_map(|m| m.watermark.as_deref())),
    }
}

/// Edges a SyncPolicy status lists (the worst).
pub const WORST_EDGES: usize = 10;

/// All edges in a few numbers, and the worst few in full.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeSummary {
    pub count: i32,
    /// Edges with changes pending.
    pub lagging: i32,
    pub max_lag_seconds: i64,
    /// Nearest-rank 99th percentile of the edges' lag.
    pub p99_lag_seconds: i64,
    /// At most `keep` edges: largest lag first, then most pending, then by name (so a quiet
    /// policy lists the same edges every time and its status does not churn).
    pub worst: Vec<EdgeStatus>,
}

/// Summarises `edges`, keeping the `keep` worst.
pub fn summarize_edges(edges: &[EdgeStatus], keep: usize) -> EdgeSummary {
    let mut lags: Vec<i64> = edges.iter().map(|e| e.lag_seconds.max(0)).collect();
    lags.sort_unstable();
    let p99 = if lags.is_empty() {
        0
    } else {
        // Nearest rank: the smallest value with at least 99 % of the edges at or below it.
        let rank = (lags.len() * 99).div_ceil(100).max(1);
        lags[rank - 1]
    };
    let mut worst: Vec<&EdgeStatus> = edges.iter().collect();
    worst.sort_by(|a, b| {
        b.lag_seconds
            .cmp(&a.lag_seconds)
            .then(b.pending_changes.cmp(&a.pending_changes))
            .then_with(|| (&a.from, &a.to, &a.mode).cmp(&(&b.from, &b.to, &b.mode)))
    });
    EdgeSummary {
        count: i32::try_from(edges.len()).unwrap_or(i32::MAX),
        lagging: i32::try_from(edges.iter().filter(|e| e.pending_changes > 0).count())
            .unwrap_or(i32::MAX),
        max_lag_seconds: lags.last().copied().unwrap_or(0),
        p99_lag_seconds: p99,
        worst: worst.into_iter().take(keep).cloned().collect(),
    }
}

/// Aggregates a policy: [`aggregate`] over all members, with the lag also bounded below by
/// every edge's lag.
pub fn aggregate_policy(members: &[MemberStatus], edges: &[EdgeStatus]) -> Totals {
    let mut t = aggregate(members);
    let edge_max = edges.iter().map(|e| e.lag_seconds).max().unwrap_or(0);
    t.max_lag_seconds = t.max_lag_seconds.max(edge_max);
    t
}

/// The highest of some HLC watermarks, compared numerically; unparsable ones are ignored.
pub fn max_watermark<'a>(watermarks: impl IntoIterator<Item = &'a str>) -> Option<String> {
    watermarks
        .into_iter()
        .filter_map(|w| Hlc::from_hex(w).ok())
        .max()
        .map(Hlc::to_hex)
}

/// Watches one edge (or member) for "changes pending but no checkpoint progress".
///
/// Feed it every status refresh; it reports `Stalled` once the checkpoint has not moved for
/// [`STALL_INTERVALS`] sync intervals while changes were pending the whole time. Nothing
/// pending, or any checkpoint movement, resets it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StallWatch {
    checkpoint: Option<Hlc>,
    stuck_since_ms: Option<u64>,
}

impl StallWatch {
    /// Records an observation and says whether the edge is stalled now.
    pub fn observe(
        &mut self,
        now_ms: u64,
        pending: u64,
        checkpoint: Option<Hlc>,
        interval_ms: u64,
    ) -> bool {
        let moved = self.checkpoint != checkpoint;
        self.checkpoint = checkpoint;
        if pending == 0 || moved {
            self.stuck_since_ms = (pending > 0).then_some(now_ms);
            return false;
        }
        let since = *self.stuck_since_ms.get_or_insert(now_ms);
        now_ms.saturating_sub(since) >= STALL_INTERVALS.saturating_mul(interval_ms.max(1))
    }

    /// How long the checkpoint has been stuck with changes pending (0 when it is not).
    pub fn stuck_for_ms(&self, now_ms: u64) -> u64 {
        self.stuck_since_ms
            .map_or(0, |since| now_ms.saturating_sub(since))
    }
}

/// A stateless stall check that survives operator restarts: changes are pending and the last
/// successful sync (from the node's `/admin/status`) is more than three intervals old, or
/// there never was one and the member has existed that long (`known_since_ms`).
pub fn stalled_by_last_success(
    pending: u64,
    last_success_ms: Option<u64>,
    known_since_ms: u64,
    now_ms: u64,
    interval_ms: u64,
) -> bool {
    if pending == 0 {
        return false;
    }
    let since = last_success_ms.unwrap_or(known_since_ms);
    now_ms.saturating_sub(since) > STALL_INTERVALS.saturating_mul(interval_ms.max(1))
}

/// One member's report for the tombstone GC horizon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub node_id: String,
    /// Highest applied origin HLC per origin node id; `None` when the member did not answer.
    pub applied: Option<BTreeMap<String, Hlc>>,
}

/// The safe GC horizon: the minimum over all members and all origins of the highest origin HLC
/// each member has applied. Any member that did not answer holds GC back (`None`), and so does
/// a member that has applied nothing from some origin. A node's own writes never hold it back.
pub fn gc_horizon(reports: &[GcReport]) -> Option<Hlc> {
    if reports.is_empty() {
        return None;
    }
    let mut origins: BTreeSet<&str> = BTreeSet::new();
    for r in reports {
        origins.extend(r.applied.as_ref()?.keys().map(String::as_str));
        origins.insert(&r.node_id);
    }
    let mut horizon = u64::MAX;
    for r in reports {
        let applied = r.applied.as_ref()?;
        for o in &origins {
            if *o == r.node_id {
                continue;
            }
            horizon = horizon.min(applied.get(*o).map_or(0, |h| h.0));
        }
    }
    (horizon != 0 && horizon != u64::MAX).then_some(Hlc(horizon))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1000;

    fn hlc(wall_ms: u64, logical: u16) -> Hlc {
        Hlc::new(wall_ms, logical)
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_pending_change() {
        let now = 1_700_000_100_000;
        let b = Backlog {
            pending: 4,
            oldest: Some(hlc(now - 42_500, 3)),
        };
        let l = edge_lag(&b, now);
        assert_eq!(
            l,
            Lag {
                pending_changes: 4,
                lag_ms: 42_500
            }
        );
        assert_eq!((l.seconds(), l.pending()), (42, 4));
    }

    #[test]
    fn nothing_pending_is_zero_lag_even_when_idle_for_long() {
        let b = Backlog {
            pending: 0,
            oldest: Some(hlc(1, 0)),
        };
        assert_eq!(edge_lag(&b, 1_700_000_000_000), Lag::ZERO);
        let empty = Backlog {
            pending: 0,
            oldest: None,
        };
        assert_eq!(edge_lag(&empty, 5), Lag::ZERO);
    }

    #[test]
    fn future_oldest_and_missing_oldest_do_not_wrap() {
        let now = 1_000_000;
        let b = Backlog {
            pending: 1,
            oldest: Some(hlc(now + 5_000, 0)),
        };
        assert_eq!(
            edge_lag(&b, now),
            Lag {
                pending_changes: 1,
                lag_ms: 0
            }
        );
        let b = Backlog {
            pending: 2,
            oldest: None,
        };
        assert_eq!(
            edge_lag(&b, now),
            Lag {
                pending_changes: 2,
                lag_ms: 0
            }
        );
    }

    #[test]
    fn backlog_decodes_from_the_nodes_json() {
        let h = hlc(1_700_000_000_000, 1);
        let b: Backlog =
            serde_json::from_str(&format!(r#"{{"pending":3,"oldest":"{}"}}"#, h.to_hex())).unwrap();
        assert_eq!(
            b,
            Backlog {
                pending: 3,
                oldest: Some(h)
            }
        );
        let b: Backlog = serde_json::from_str(r#"{"pending":0,"oldest":null}"#).unwrap();
        assert_eq!(
            b,
            Backlog {
                pending: 0,
                oldest: None
            }
        );
        assert!(serde_json::from_str::<Backlog>(r#"{"pending":1,"oldest":"nope"}"#).is_err());
    }

    #[test]
    fn member_lag_counts_each_source_once() {
        let l = |p, s| Lag {
            pending_changes: p,
            lag_ms: s * SEC,
        };
        let lag = member_lag([("a", l(5, 10)), ("a", l(5, 12)), ("b", l(2, 3))]);
        assert_eq!(
            lag,
            Lag {
                pending_changes: 7,
                lag_ms: 12 * SEC
            }
        );
        assert_eq!(member_lag([]), Lag::ZERO);
    }

    fn member(pod: &str, ready: bool, lag: i64, conflicts: i64, wm: Option<Hlc>) -> MemberStatus {
        MemberStatus {
            pod: pod.into(),
            ready,
            lag_seconds: lag,
            conflicts,
            watermark: wm.map(Hlc::to_hex),
            ..Default::default()
        }
    }

    #[test]
    fn aggregation_for_peer_and_policy_status() {
        let ms = [
            member("a", true, 3, 2, Some(hlc(900, 0))),
            member("b", false, 17, 1, Some(hlc(1000, 2))),
            member("c", true, 0, 0, None),
        ];
        let t = aggregate(&ms);
        assert_eq!(
            t,
            Totals {
                members: 3,
                ready_members: 2,
                max_lag_seconds: 17,
                conflicts: 3,
                watermark: Some(hlc(1000, 2).to_hex()),
            }
        );
        assert_eq!(aggregate(&[]), Totals::default());

        let edges = [EdgeStatus {
            from: "a".into(),
            to: "b".into(),
            mode: "Pull".into(),
            pending_changes: 9,
            lag_seconds: 40,
        }];
        assert_eq!(aggregate_policy(&ms, &edges).max_lag_seconds, 40);
        assert_eq!(aggregate_policy(&ms, &[]).max_lag_seconds, 17);
    }

    #[test]
    fn watermark_compares_numerically() {
        assert_eq!(
            max_watermark(["0000000000000010", "00000000000000ff", "junk"]).unwrap(),
            "00000000000000ff"
        );
        assert_eq!(max_watermark([]), None);
    }

    #[test]
    fn stalled_after_three_intervals_without_progress() {
        let iv = 30 * SEC;
        let (c1, c2) = (Some(hlc(1, 0)), Some(hlc(2, 0)));
        let mut w = StallWatch::default();
        assert!(!w.observe(0, 5, c1, iv));
        assert!(!w.observe(60 * SEC, 5, c1, iv));
        assert!(!w.observe(89 * SEC, 9, c1, iv));
        assert!(w.observe(90 * SEC, 9, c1, iv), "three intervals stuck");
        assert_eq!(w.stuck_for_ms(90 * SEC), 90 * SEC);
        // progress resets
        assert!(!w.observe(91 * SEC, 9, c2, iv));
        assert!(!w.observe(150 * SEC, 9, c2, iv));
        assert!(w.observe(181 * SEC, 9, c2, iv));
        // nothing pending is never stalled, whatever the checkpoint does
        assert!(!w.observe(500 * SEC, 0, c2, iv));
        assert!(!w.observe(900 * SEC, 0, c2, iv));
        assert_eq!(w.stuck_for_ms(900 * SEC), 0);
        // pending again: the clock starts now, not at the last movement
        assert!(!w.observe(901 * SEC, 1, c2, iv));
        assert!(!w.observe(990 * SEC, 1, c2, iv));
        assert!(w.observe(991 * SEC, 1, c2, iv));
    }

    #[test]
    fn stateless_stall_check() {
        let iv = 10 * SEC;
        assert!(!stalled_by_last_success(0, None, 0, 10_000 * SEC, iv));
        assert!(!stalled_by_last_success(
            3,
            Some(100 * SEC),
            0,
            130 * SEC,
            iv
        ));
        assert!(stalled_by_last_success(
            3,
            Some(100 * SEC),
            0,
            131 * SEC,
            iv
        ));
        assert!(!stalled_by_last_success(3, None, 100 * SEC, 120 * SEC, iv));
        assert!(stalled_by_last_success(3, None, 100 * SEC, 140 * SEC, iv));
    }

    #[test]
    fn gc_horizon_is_the_minimum_and_held_back() {
        let rep = |id: &str, applied: &[(&str, u64)]| GcReport {
            node_id: id.into(),
            applied: Some(
                applied
                    .iter()
                    .map(|(k, v)| (k.to_string(), Hlc(*v)))
                    .collect(),
            ),
        };
        let reports = [
            rep("aaaa", &[("bbbb", 50), ("cccc", 70)]),
            rep("bbbb", &[("aaaa", 40), ("cccc", 90)]),
            rep("cccc", &[("aaaa", 60), ("bbbb", 55)]),
        ];
        assert_eq!(gc_horizon(&reports), Some(Hlc(40)));
        // an unreachable member holds GC back
        let mut r = reports.to_vec();
        r[2].applied = None;
        assert_eq!(gc_horizon(&r), None);
        // a member that has applied nothing from an origin holds it back
        let r = [rep("aaaa", &[]), rep("bbbb", &[("aaaa", 9)])];
        assert_eq!(gc_horizon(&r), None);
        assert_eq!(gc_horizon(&[]), None);
        // a single node: nothing from anyone else to wait for, but no horizon either
        assert_eq!(gc_horizon(&[rep("aaaa", &[])]), None);
    }

    fn edge(from: &str, to: &str, pending: i64, lag: i64) -> EdgeStatus {
        EdgeStatus {
            from: from.into(),
            to: to.into(),
            mode: "Pull".into(),
            pending_changes: pending,
            lag_seconds: lag,
        }
    }

    #[test]
    fn edge_summary_counts_everything_and_keeps_the_worst() {
        let mut edges: Vec<EdgeStatus> = (0..200)
            .map(|i| edge(&format!("m{i:03}"), "x", 0, 0))
            .collect();
        edges[17] = edge("m017", "x", 5, 40);
        edges[90] = edge("m090", "x", 9, 40);
        edges[150] = edge("m150", "x", 1, 7);
        let s = summarize_edges(&edges, WORST_EDGES);
        assert_eq!((s.count, s.lagging, s.max_lag_seconds), (200, 3, 40));
        // 99 % of 200 is 198 edges: the 198th smallest lag is 7 s.
        assert_eq!(s.p99_lag_seconds, 7);
        assert_eq!(s.worst.len(), WORST_EDGES);
        let names: Vec<&str> = s.worst.iter().map(|e| e.from.as_str()).collect();
        // Equal lag: more pending first; then the quiet ones in name order.
        assert_eq!(&names[..5], ["m090", "m017", "m150", "m000", "m001"]);
        // The same input in another order gives the same summary.
        edges.reverse();
        assert_eq!(summarize_edges(&edges, WORST_EDGES), s);
        assert_eq!(summarize_edges(&[], WORST_EDGES), EdgeSummary::default());
        let one = summarize_edges(&[edge("a", "b", 2, 3)], WORST_EDGES);
        assert_eq!((one.count, one.p99_lag_seconds, one.worst.len()), (1, 3, 1));
    }

    #[test]
    fn the_sender_reports_pull_edges_by_puller_id_and_push_edges_by_peer_name() {
        use crate::wire::{PeerStatus, PullerStatus};
        let backlog = |n| Backlog {
            pending: n,
            oldest: Some(Hlc(7)),
        };
        let status = NodeStatus {
            node_id: NodeId(1),
            incarnation: "i".into(),
            watermark: Hlc(9),
            applied: BTreeMap::new(),
            gc_horizon: None,
            documents: 0,
            tombstones: 0,
            conflicts: 0,
            superseded: 0,
            checkpoint_pending: false,
            wall_ms: 0,
            max_clock_drift_ms: 0,
            peers: vec![
                PeerStatus {
                    peer_id: "b".into(),
                    push_backlog: Some(backlog(3)),
                    ..Default::default()
                },
                PeerStatus {
                    peer_id: "c".into(),
                    ..Default::default()
                },
            ],
            pullers: vec![PullerStatus {
                node_id: NodeId(2),
                since: Hlc(5),
                collections: Vec::new(),
                last_seen_ms: 0,
                backlog: backlog(4),
            }],
            config_digest: None,
        };
        let pull = |id| served_backlog(&status, Mode::Pull, "b", id);
        assert_eq!(pull(Some(NodeId(2))), Some(backlog(4)));
        assert_eq!(pull(Some(NodeId(3))), None, "a puller not seen yet");
        assert_eq!(pull(None), None, "a receiver whose id is unknown");
        assert_eq!(
            served_backlog(&status, Mode::Push, "b", None),
            Some(backlog(3))
        );
        assert_eq!(served_backlog(&status, Mode::Push, "c", None), None);
        assert_eq!(served_backlog(&status, Mode::Push, "zz", None), None);

        // Without a report: nothing pending only at the head of the same incarnation.
        assert!(nothing_pending(&status, Some(Hlc(9)), Some("i")));
        assert!(nothing_pending(&status, Some(Hlc(10)), Some("i")));
        assert!(!nothing_pending(&status, Some(Hlc(8)), Some("i")));
        assert!(!nothing_pending(&status, None, Some("i")));
        assert!(
            !nothing_pending(&status, Some(Hlc(9)), Some("old")),
            "a checkpoint in a wiped sender's former log"
        );
        let empty = NodeStatus {
            watermark: Hlc::ZERO,
            ..status.clone()
        };
        assert!(nothing_pending(&empty, None, None), "an empty log");
    }
}
