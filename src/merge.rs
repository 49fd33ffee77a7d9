//! Deciding what a record becomes when a remote version arrives. Pure: no IO, no clock.
//!
//! Dominated or equal → keep; dominating → replace; concurrent → the strategy picks the
//! visible value, the stored vector is the join of both, and the loser is kept as a conflict.
//! With `LastWriterWins` and `Merge` both sides compute the identical result, so a conflict
//! is resolved once and never ping-pongs.

use sha2::{Digest, Sha256};

use crate::config::ConflictStrategy;
use crate::model::{
    Causality, CollectionSettings, ConflictVersion, FieldStamps, Stamp, Value, Version,
    MAX_CONFLICTS_PER_RECORD, SETTINGS_UNITS,
};

/// A record's replicated state.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub version: Version,
    pub value: Value,
    pub conflicts: Vec<ConflictVersion>,
}

/// What to do with an incoming version.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Resolution {
    /// Local state already covers the incoming one.
    Keep,
    /// Store this state. `conflict` is the loser if a concurrent update was resolved.
    Store {
        state: State,
        conflict: Option<ConflictVersion>,
    },
}

/// Resolves `incoming` against the local state (if any) under `strategy`.
pub fn resolve(local: Option<&State>, incoming: &State, strategy: ConflictStrategy) -> Resolution {
    let Some(local) = local else {
        return Resolution::Store {
            state: State {
                version: incoming.version.clone(),
                value: incoming.value.clone(),
                conflicts: union_conflicts(&[], &incoming.conflicts),
            },
            conflict: None,
        };
    };
    let conflicts = union_conflicts(&local.conflicts, &incoming.conflicts);
    match incoming.version.vv.compare(&local.version.vv) {
        Causality::Equal if incoming.value != local.value => {
            // Same history, different values: only possible when a merge or a Prefer*
            // strategy saw versions in different orders. Pick deterministically so that the
            // nodes converge instead of keeping their differences forever.
            if content_hash(&incoming.value) > content_hash(&local.value) {
                Resolution::Store {
                    state: State {
                        version: incoming.version.clone(),
                        value: incoming.value.clone(),
                        conflicts,
                    },
                    conflict: None,
                }
            } else if conflicts != local.conflicts {
                Resolution::Store {
                    state: State {
                        conflicts,
                        ..local.clone()
                    },
                    conflict: None,
                }
            } else {
                Resolution::Keep
            }
        }
        Causality::DominatedBy | Causality::Equal => {
            if conflicts == local.conflicts {
                Resolution::Keep
            } else {
                Resolution::Store {
                    state: State {
                        conflicts,
                        ..local.clone()
                    },
                    conflict: None,
                }
            }
        }
        Causality::Dominates => Resolution::Store {
            state: State {
                version: incoming.version.clone(),
                value: incoming.value.clone(),
                conflicts,
            },
            conflict: None,
        },
        Causality::Concurrent => resolve_concurrent(local, incoming, conflicts, strategy),
    }
}

fn resolve_concurrent(
    local: &State,
    incoming: &State,
    conflicts: Vec<ConflictVersion>,
    strategy: ConflictStrategy,
) -> Resolution {
    let vv = local.version.vv.join(&incoming.version.vv);
    let incoming_greater = lww_greater(incoming, local);
    let (winner, loser) = match strategy {
        ConflictStrategy::PreferLocal => (local, incoming),
        ConflictStrategy::PreferRemote => (incoming, local),
        ConflictStrategy::LastWriterWins | ConflictStrategy::Merge => {
            if incoming_greater {
                (incoming, local)
            } else {
                (local, incoming)
            }
        }
    };
    let version = Version {
        hlc: winner.version.hlc,
        node: winner.version.node,
        vv,
    };
    // Merge: two live collection settings join unit by unit (per-unit last writer wins);
    // nothing is lost, so no conflict is recorded.
    if strategy == ConflictStrategy::Merge {
        if let (
            Value::Collection {
                settings: a,
                stamps: sa,
            },
            Value::Collection {
                settings: b,
                stamps: sb,
            },
        ) = (&winner.value, &loser.value)
        {
            let (settings, stamps) = merge_settings(
                (a, sa, stamp_of(&winner.version)),
                (b, sb, stamp_of(&loser.version)),
            );
            return Resolution::Store {
                state: State {
                    version,
                    value: Value::Collection { settings, stamps },
                    conflicts,
                },
                conflict: None,
            };
        }
    }
    let lost = ConflictVersion {
        hlc: loser.version.hlc,
        node: loser.version.node,
        value: loser.value.clone(),
    };
    let conflicts = union_conflicts(&conflicts, std::slice::from_ref(&lost));
    Resolution::Store {
        state: State {
            version,
            value: winner.value.clone(),
            conflicts,
        },
        conflict: Some(lost),
    }
}

/// LWW order: greater `(hlc, node)`, then greater content hash for an exact tie.
fn lww_greater(a: &State, b: &State) -> bool {
    match a.version.order_key().cmp(&b.version.order_key()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => content_hash(&a.value) > content_hash(&b.value),
    }
}

/// SHA-256 of the canonical JSON of a value.
pub fn content_hash(value: &Value) -> [u8; 32] {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Sha256::digest(&bytes).into()
}

fn stamp_of(v: &Version) -> Stamp {
    Stamp {
        hlc: v.hlc,
        node: v.node,
    }
}

/// Collection settings with their per-unit stamps, and the stamp of units without one.
pub type StampedSettings<'a> = (&'a CollectionSettings, &'a FieldStamps, Stamp);

/// The join of two stamped settings: every unit of [`SETTINGS_UNITS`] takes the value with
/// the greater stamp (a unit's stamp is the HLC of the write that last changed it). This is
/// commutative, associative and idempotent, unlike averaging `hybrid_alpha`, and a setting
/// changed after seeing another change always wins over it.
pub fn merge_settings(a: StampedSettings, b: StampedSettings) -> (CollectionSettings, FieldStamps) {
    let va = serde_json::to_value(a.0).unwrap_or_default();
    let vb = serde_json::to_value(b.0).unwrap_or_default();
    let mut out = va.clone();
    let mut stamps = std::collections::BTreeMap::new();
    for unit in SETTINGS_UNITS {
        let ta = a.1 .0.get(unit).copied().unwrap_or(a.2);
        let tb = b.1 .0.get(unit).copied().unwrap_or(b.2);
        let (pa, pb) = (va.pointer(unit), vb.pointer(unit));
        // Equal stamps come from the same write; compare values only to stay deterministic
        // if a store was ever restored with a reused node id.
        let take_b = tb > ta
            || (tb == ta && serde_json::to_string(&pb).ok() > serde_json::to_string(&pa).ok());
        if take_b {
            if let (Some(slot), Some(v)) = (out.pointer_mut(unit), pb) {
                *slot = v.clone();
            }
        }
        stamps.insert(unit.to_string(), ta.max(tb));
    }
    let merged = serde_json::from_value(out).unwrap_or_else(|_| a.0.clone());
    (merged, FieldStamps(stamps))
}

/// Set union keyed by `(hlc, node)`, keeping the greatest [`MAX_CONFLICTS_PER_RECORD`],
/// sorted ascending. Top-N of a union is itself commutative, associative and idempotent.
pub fn union_conflicts(a: &[ConflictVersion], b: &[ConflictVersion]) -> Vec<ConflictVersion> {
    let mut all: Vec<ConflictVersion> = a.iter().chain(b.iter()).cloned().collect();
    all.sort_by(|x, y| {
        x.order_key()
            .cmp(&y.order_key())
            .then_with(|| content_hash(&x.value).cmp(&content_hash(&y.value)))
    });
    all.dedup_by(|x, y| x.order_key() == y.order_key());
    let excess = all.len().saturating_sub(MAX_CONFLICTS_PER_RECORD);
    all.drain(..excess);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::{Hlc, HlcClock, ManualClock};
    use crate::model::{Document, NodeId, VersionVector};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn doc_state(node: u16, hlc: u64, history: &[(u16, u64)], text: &str) -> State {
        let vv = VersionVector(history.iter().map(|(n, h)| (NodeId(*n), Hlc(*h))).collect());
        State {
            version: Version {
                hlc: Hlc(hlc),
                node: NodeId(node),
                vv: vv.bumped(NodeId(node), Hlc(hlc)),
            },
            value: doc_value(text),
            conflicts: vec![],
        }
    }

    fn doc_value(text: &str) -> Value {
        Value::Document {
            document: Document {
                id: "d".into(),
                content: text.into(),
                metadata: Default::default(),
                embedding: None,
            },
        }
    }

    fn apply(local: Option<State>, incoming: &State, s: ConflictStrategy) -> Option<State> {
        match resolve(local.as_ref(), incoming, s) {
            Resolution::Keep => local,
            Resolution::Store { state, .. } => Some(state),
        }
    }

    #[test]
    fn dominating_replaces_and_dominated_is_ignored() {
        let lww = ConflictStrategy::LastWriterWins;
        let a = doc_state(1, 10, &[], "a");
        let b = doc_state(2, 20, &[(1, 10)], "b");
        assert_eq!(apply(Some(a.clone()), &b, lww), Some(b.clone()));
        assert_eq!(resolve(Some(&b), &a, lww), Resolution::Keep);
        assert_eq!(resolve(Some(&b), &b, lww), Resolution::Keep);
    }

    #[test]
    fn concurrent_lww_is_symmetric_and_keeps_loser() {
        let lww = ConflictStrategy::LastWriterWins;
        let a = doc_state(1, 10, &[], "a");
        let b = doc_state(2, 20, &[], "b");
        let on_a = apply(Some(a.clone()), &b, lww).unwrap();
        let on_b = apply(Some(b.clone()), &a, lww).unwrap();
        assert_eq!(on_a, on_b);
        assert_eq!(on_a.value, b.value);
        assert_eq!(on_a.conflicts.len(), 1);
        assert_eq!(on_a.conflicts[0].node, NodeId(1));
        // No ping-pong: each side's result is a no-op on the other.
        assert_eq!(resolve(Some(&on_a), &on_b, lww), Resolution::Keep);
    }

    #[test]
    fn prefer_local_and_remote_pick_sides() {
        let a = doc_state(1, 10, &[], "a");
        let b = doc_state(2, 20, &[], "b");
        let local = apply(Some(a.clone()), &b, ConflictStrategy::PreferLocal).unwrap();
        assert_eq!(local.value, a.value);
        let remote = apply(Some(b.clone()), &a, ConflictStrategy::PreferRemote).unwrap();
        assert_eq!(remote.value, a.value);
        assert_eq!(remote.conflicts.len(), 1);
    }

    #[test]
    fn delete_vs_update_same_outcome_both_orders() {
        let lww = ConflictStrategy::LastWriterWins;
        let upd = doc_state(1, 30, &[(2, 5)], "updated");
        let mut del = doc_state(2, 20, &[(2, 5)], "");
        del.value = Value::Deleted;
        let x = apply(Some(upd.clone()), &del, lww).unwrap();
        let y = apply(Some(del.clone()), &upd, lww).unwrap();
        assert_eq!(x, y);
        assert_eq!(x.value, upd.value);
        assert_eq!(x.conflicts[0].value, Value::Deleted);
    }

    fn stamped(s: &CollectionSettings, hlc: u64, node: u16) -> (CollectionSettings, FieldStamps) {
        let st = s.stamps_after_write(
            None,
            Stamp {
                hlc: Hlc(hlc),
                node: NodeId(node),
            },
        );
        (s.clone(), st)
    }

    #[test]
    fn merge_takes_the_latest_write_of_each_setting() {
        let base = CollectionSettings::default();
        let (s0, st0) = stamped(&base, 10, 1);
        // Node 1 later changes hybrid_alpha; node 2 concurrently changes top_k.
        let mut s1 = s0.clone();
        s1.search.hybrid_alpha = 0.2;
        let d0 = Stamp {
            hlc: Hlc(10),
            node: NodeId(1),
        };
        let st1 = s1.stamps_after_write(
            Some((&s0, &st0, d0)),
            Stamp {
                hlc: Hlc(20),
                node: NodeId(1),
            },
        );
        let mut s2 = s0.clone();
        s2.search.top_k = 9;
        let st2 = s2.stamps_after_write(
            Some((&s0, &st0, d0)),
            Stamp {
                hlc: Hlc(15),
                node: NodeId(2),
            },
        );
        let d1 = Stamp {
            hlc: Hlc(20),
            node: NodeId(1),
        };
        let d2 = Stamp {
            hlc: Hlc(15),
            node: NodeId(2),
        };
        let (m, mst) = merge_settings((&s1, &st1, d1), (&s2, &st2, d2));
        assert_eq!(m.search.hybrid_alpha, 0.2, "both changes survive");
        assert_eq!(m.search.top_k, 9);
        let (m2, mst2) = merge_settings((&s2, &st2, d2), (&s1, &st1, d1));
        assert_eq!((&m, &mst), (&m2, &mst2), "commutative");
        let (again, again_st) = merge_settings((&m, &mst, d1), (&s1, &st1, d1));
        assert_eq!(
            (again, again_st),
            (m.clone(), mst.clone()),
            "idempotent under repeated merges"
        );
    }

    /// A realistic history of one record: nodes with their own HLC clocks write locally and
    /// receive each other's states, as the sync protocol does.
    #[derive(Debug, Clone)]
    enum Step {
        Write(usize, u8),
        Delete(usize),
        Receive(usize, usize),
        Tick(usize, u64),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                3 => (0usize..3, any::<u8>()).prop_map(|(n, v)| Step::Write(n, v)),
                1 => (0usize..3).prop_map(Step::Delete),
                3 => (0usize..3, 0usize..3).prop_map(|(a, b)| Step::Receive(a, b)),
                1 => (0usize..3, 0u64..20).prop_map(|(n, d)| Step::Tick(n, d)),
            ],
            1..30,
        )
    }

    /// Runs the history; returns every state any node ever held (what could be in flight).
    fn simulate(steps: &[Step], strategy: ConflictStrategy, collection: bool) -> Vec<State> {
        let walls: Vec<Arc<ManualClock>> = (0..3)
            .map(|i| Arc::new(ManualClock::new(1000 + i)))
            .collect();
        let clocks: Vec<HlcClock> = walls
            .iter()
            .map(|w| HlcClock::new(w.clone(), u64::MAX))
            .collect();
        let mut nodes: Vec<Option<State>> = vec![None, None, None];
        let mut seen = Vec::new();
        for step in steps {
            match step {
                Step::Tick(n, d) => walls[*n].set(crate::hlc::WallClock::now_ms(&walls[*n]) + d),
                Step::Write(n, _) | Step::Delete(n) => {
                    let v = match step {
                        Step::Write(_, v) => Some(*v),
                        _ => None,
                    };
                    let hlc = clocks[*n].now();
                    let node = NodeId(*n as u16 + 1);
                    let base = nodes[*n]
                        .as_ref()
                        .map(|s| s.version.vv.clone())
                        .unwrap_or_default();
                    let value = match (v, collection) {
                        (None, _) => Value::Deleted,
                        (Some(v), false) => doc_value(&v.to_string()),
                        (Some(v), true) => {
                            let mut settings = CollectionSettings::default();
                            settings.search.top_k = 1 + u32::from(v % 4);
                            settings.search.hybrid = v % 3 == 0;
                            settings.search.hybrid_alpha = f64::from(v % 5) / 4.0;
                            let prev = match &nodes[*n] {
                                Some(State {
                                    value:
                                        Value::Collection {
                                            settings: s,
                                            stamps,
                                        },
                                    version,
                                    ..
                                }) => Some((
                                    s.clone(),
                                    stamps.clone(),
                                    Stamp {
                                        hlc: version.hlc,
                                        node: version.node,
                                    },
                                )),
                                _ => None,
                            };
                            let stamps = settings.stamps_after_write(
                                prev.as_ref().map(|(s, st, d)| (s, st, *d)),
                                Stamp { hlc, node },
                            );
                            Value::Collection { settings, stamps }
                        }
                    };
                    let s = State {
                        version: Version {
                            hlc,
                            node,
                            vv: base.bumped(node, hlc),
                        },
                        value,
                        conflicts: nodes[*n]
                            .as_ref()
                            .map(|s| s.conflicts.clone())
                            .unwrap_or_default(),
                    };
                    seen.push(s.clone());
                    nodes[*n] = Some(s);
                }
                Step::Receive(to, from) => {
                    if let Some(incoming) = nodes[*from].clone() {
                        clocks[*to].observe(incoming.version.hlc).unwrap();
                        nodes[*to] = apply(nodes[*to].take(), &incoming, strategy);
                        if let Some(s) = &nodes[*to] {
                            clocks[*to].observe(s.version.hlc).unwrap();
                            seen.push(s.clone());
                        }
                    }
                }
            }
        }
        seen
    }

    fn permuted<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
        let mut out = v.to_vec();
        let mut r = seed;
        for i in (1..out.len()).rev() {
            r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.swap(i, (r >> 33) as usize % (i + 1));
        }
        out
    }

    fn fold(states: &[State], s: ConflictStrategy) -> Option<(Version, Value)> {
        states
            .iter()
            .fold(None, |acc, x| apply(acc, x, s))
            .map(|x| (x.version, x.value))
    }

    proptest! {
        /// Applying every version a history produced, in any order and with repeats, ends in
        /// the same version and value (LWW for documents, per-unit merge for settings).
        #[test]
        fn apply_is_order_independent_and_idempotent(steps in steps(), seed in any::<u64>(), collection in any::<bool>()) {
            for strategy in [ConflictStrategy::LastWriterWins, ConflictStrategy::Merge] {
                let seen = simulate(&steps, strategy, collection);
                let once = fold(&seen, strategy);
                let other = fold(&permuted(&seen, seed), strategy);
                let mut twice = seen.clone();
                twice.extend(permuted(&seen, seed ^ 1));
                prop_assert_eq!(&fold(&twice, strategy), &once, "a repeated version changes nothing");
                // LWW: the same result in any order. Merge: a version superseded by a
                // collection delete may or may not have been merged in; once the two
                // results are exchanged, they are identical.
                if strategy == ConflictStrategy::LastWriterWins || !collection {
                    prop_assert_eq!(&other, &once);
                }
                let as_state = |x: &Option<(Version, Value)>| x.clone().map(|(version, value)| State { version, value, conflicts: vec![] });
                let (a, b) = (as_state(&once), as_state(&other));
                if let (Some(a), Some(b)) = (a, b) {
                    let ab = apply(Some(a.clone()), &b, strategy).map(|s| (s.version, s.value));
                    let ba = apply(Some(b.clone()), &a, strategy).map(|s| (s.version, s.value));
                    prop_assert_eq!(ab, ba, "exchanged results converge");
                }
            }
        }

        /// The settings merge itself is a join: commutative, associative, idempotent.
        #[test]
        fn merge_settings_is_a_join(vals in proptest::collection::vec((any::<u8>(), 1u64..50, 1u16..4), 3)) {
            let xs: Vec<(CollectionSettings, FieldStamps, Stamp)> = vals.iter().map(|(v, h, n)| {
                let mut s = CollectionSettings::default();
                s.search.top_k = 1 + u32::from(v % 4);
                s.search.hybrid_alpha = f64::from(v % 5) / 4.0;
                let st = Stamp { hlc: Hlc(*h), node: NodeId(*n) };
                (s.clone(), s.stamps_after_write(None, st), st)
            }).collect();
            let m = |a: &(CollectionSettings, FieldStamps, Stamp), b: &(CollectionSettings, FieldStamps, Stamp)| {
                let (s, st) = merge_settings((&a.0, &a.1, a.2), (&b.0, &b.1, b.2));
                (s, st, a.2.max(b.2))
            };
            let (a, b, c) = (&xs[0], &xs[1], &xs[2]);
            prop_assert_eq!(m(a, b).0, m(b, a).0);
            prop_assert_eq!(m(&m(a, b), c).0, m(a, &m(b, c)).0);
            prop_assert_eq!(m(a, a).0, a.0.clone());
            prop_assert_eq!(m(&m(a, b), b).0, m(a, b).0);
        }

        #[test]
        fn union_conflicts_is_a_join(
            a in proptest::collection::vec((1u64..40, 1u16..4), 0..20),
            b in proptest::collection::vec((1u64..40, 1u16..4), 0..20),
        ) {
            let mk = |v: &Vec<(u64, u16)>| v.iter().map(|(h, n)| ConflictVersion {
                hlc: Hlc(*h), node: NodeId(*n), value: Value::Deleted }).collect::<Vec<_>>();
            let (a, b) = (mk(&a), mk(&b));
            let ab = union_conflicts(&a, &b);
            prop_assert_eq!(&ab, &union_conflicts(&b, &a));
            prop_assert_eq!(&ab, &union_conflicts(&ab, &b));
            prop_assert!(ab.len() <= MAX_CONFLICTS_PER_RECORD);
        }
    }
}
