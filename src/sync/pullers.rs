//! Who pulls from this node and how far each has got: the furthest `since` of its pulls,
//! moved on while its wait skips entries it does not want. A pull from further back (an
//! anti-entropy round resumes from the durable checkpoint, which trails the live position)
//! does not move it back; a pull with another filter starts it afresh. In memory only; a
//! puller shows up again with its next request after a restart.
//!
//! A pull names its puller by `exclude_origin` (the puller's own node id, for echo
//! suppression), so old pullers are recognised without a new parameter.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::Result;
use crate::hlc::Hlc;
use crate::model::NodeId;
use crate::store::Store;
use crate::wire::{Backlog, ChangeFilter};

/// Pullers remembered at most; beyond, the one seen longest ago is forgotten.
pub const MAX_PULLERS: usize = 1024;
/// A puller not seen for this long is forgotten (a batch-only puller asks at least once per
/// interval, at most 24 h).
pub const FORGET_AFTER_MS: u64 = 25 * 3600 * 1000;

/// Where one puller stands, and what it wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Puller {
    pub since: Hlc,
    pub filter: ChangeFilter,
    /// Writers whose changes it receives from those nodes directly (its wait's `quiet`).
    pub quiet: Vec<NodeId>,
    pub last_seen_ms: u64,
}

/// Entries a backlog reads to tell wanted from unwanted; beyond, it counts without the filter.
pub const BACKLOG_PROBE: usize = 256;

/// What a receiver at `since` still lacks from `store`: the entries after it that `filter`
/// admits and no `quiet` writer wrote (those reach it directly). A backlog longer than
/// [`BACKLOG_PROBE`] is counted by collection alone, which can only overstate it.
pub async fn backlog(
    store: &dyn Store,
    since: Hlc,
    filter: &ChangeFilter,
    quiet: &[NodeId],
) -> Result<Backlog> {
    let page = store.changes_since(since, BACKLOG_PROBE, filter).await?;
    if page.has_more {
        return store.backlog(since, &filter.collections).await;
    }
    let wanted = page
        .changes
        .iter()
        .filter(|c| !quiet.contains(&c.version.node));
    Ok(wanted.fold(Backlog::default(), |b, c| Backlog {
        pending: b.pending + 1,
        oldest: Some(b.oldest.map_or(c.cursor, |o| o.min(c.cursor))),
    }))
}

#[derive(Debug, Default)]
pub struct Pullers(Mutex<HashMap<NodeId, Puller>>);

impl Pullers {
    /// A pull from `node` starting at `since` arrived at `now_ms`; `quiet` is its wait's list
    /// (`None` for a pull that does not wait, which keeps the last wait's).
    pub fn seen(
        &self,
        node: NodeId,
        since: Hlc,
        filter: &ChangeFilter,
        quiet: Option<&[NodeId]>,
        now_ms: u64,
    ) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // The common case, a known puller asking again: updated in place, nothing allocated
        // unless its wait names another quiet list.
        if let Some(p) = map.get_mut(&node).filter(|p| p.filter == *filter) {
            p.since = p.since.max(since);
            if let Some(q) = quiet.filter(|q| *q != p.quiet.as_slice()) {
                p.quiet = q.to_vec();
            }
            p.last_seen_ms = now_ms;
            return;
        }
        // A new puller (or a new filter): forget the long unseen, and the oldest when full.
        if !map.contains_key(&node) {
            map.retain(|_, p| now_ms.saturating_sub(p.last_seen_ms) < FORGET_AFTER_MS);
            if map.len() >= MAX_PULLERS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, p)| p.last_seen_ms)
                    .map(|(n, _)| *n)
                {
                    map.remove(&oldest);
                }
            }
        }
        let puller = Puller {
            since,
            filter: filter.clone(),
            quiet: quiet.map(<[NodeId]>::to_vec).unwrap_or_default(),
            last_seen_ms: now_ms,
        };
        map.insert(node, puller);
    }

    /// A waiting pull from `node` has looked at everything up to `to` and wants none of it:
    /// the puller stands there now (never moves back).
    pub fn advanced(&self, node: NodeId, to: Hlc) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get_mut(&node) {
            p.since = p.since.max(to);
        }
    }

    /// Every puller, by node id.
    pub fn list(&self) -> Vec<(NodeId, Puller)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(NodeId, Puller)> = map.iter().map(|(n, p)| (*n, p.clone())).collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_furthest_pull_wins_and_skipped_entries_move_it_forward_only() {
        let p = Pullers::default();
        let docs = ChangeFilter {
            collections: vec!["docs".into()],
            ..Default::default()
        };
        p.seen(NodeId(1), Hlc(10), &ChangeFilter::default(), Some(&[]), 100);
        p.seen(NodeId(1), Hlc(20), &docs, Some(&[NodeId(3)]), 200);
        p.advanced(NodeId(1), Hlc(15));
        p.advanced(NodeId(2), Hlc(99));
        assert_eq!(
            p.list(),
            vec![(
                NodeId(1),
                Puller {
                    since: Hlc(20),
                    filter: docs.clone(),
                    quiet: vec![NodeId(3)],
                    last_seen_ms: 200
                }
            )]
        );
        p.advanced(NodeId(1), Hlc(30));
        assert_eq!(p.list()[0].1.since, Hlc(30));
        // A round from the durable checkpoint (further back, no wait): the position and the
        // wait's quiet list stay.
        p.seen(NodeId(1), Hlc(12), &docs, None, 300);
        let (_, now) = &p.list()[0];
        assert_eq!(
            (now.since, &now.quiet[..], now.last_seen_ms),
            (Hlc(30), &[NodeId(3)][..], 300)
        );
        // Another filter (a new config): it starts afresh.
        p.seen(NodeId(1), Hlc(12), &ChangeFilter::default(), None, 400);
        let (_, now) = &p.list()[0];
        assert_eq!((now.since, now.quiet.len()), (Hlc(12), 0));
    }

    #[test]
    fn bounded_by_count_and_age() {
        let p = Pullers::default();
        for i in 0..MAX_PULLERS as u16 + 5 {
            p.seen(
                NodeId(i),
                Hlc(1),
                &ChangeFilter::default(),
                None,
                1_000 + u64::from(i),
            );
        }
        let list = p.list();
        assert_eq!(list.len(), MAX_PULLERS);
        assert!(
            list.iter().all(|(n, _)| n.0 >= 5),
            "the oldest were forgotten"
        );
        p.seen(
            NodeId(9999),
            Hlc(1),
            &ChangeFilter::default(),
            None,
            3_000 + FORGET_AFTER_MS,
        );
        assert_eq!(p.list().len(), 1, "long-unseen pullers are forgotten");
    }
}
