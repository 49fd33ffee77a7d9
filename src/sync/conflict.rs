//! Deciding what a record becomes when a remote version arrives. Pure: no IO, no clock.
//!
//! Dominated or equal → keep; dominating → replace; concurrent → the strategy picks the
//! visible value, the stored vector is the join of both, and the loser is kept as a conflict.
//! With `LastWriterWins` and `Merge` both sides compute the identical result, so a conflict
//! is resolved once and never ping-pongs.

use sha2::{Digest, Sha256};

pub use crate::config::ConflictStrategy;
use crate::model::{
    Causality, CollectionSettings, ConflictVersion, Value, Version, MAX_CONFLICTS_PER_RECORD,
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
    // Merge: two live collection settings join field-wise; nothing is lost, so no conflict.
    if strategy == ConflictStrategy::Merge {
        if let (Value::Collection { settings: a }, Value::Collection { settings: b }) =
            (&winner.value, &loser.value)
        {
            return Resolution::Store {
                state: State {
                    version,
                    value: Value::Collection {
                        settings: merge_settings(a, b),
                    },
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

/// The join of two collection settings. Each field takes a semilattice join (max, or), and
/// the embedding settings follow `winner` (the greater version), so the merge is commutative,
/// associative and idempotent. Averaging `hybrid_alpha` would not be idempotent.
pub fn merge_settings(
    winner: &CollectionSettings,
    other: &CollectionSettings,
) -> CollectionSettings {
    let mut s = winner.clone();
    s.chunking.max_tokens = winner.chunking.max_tokens.max(other.chunking.max_tokens);
    s.chunking.min_tokens = winner.chunking.min_tokens.max(other.chunking.min_tokens);
    s.chunking.overlap_tokens = winner
        .chunking
        .overlap_tokens
        .max(other.chunking.overlap_tokens);
    s.search.top_k = winner.search.top_k.max(other.search.top_k);
    s.search.hybrid = winner.search.hybrid || other.search.hybrid;
    s.search.hybrid_alpha = winner.search.hybrid_alpha.max(other.search.hybrid_alpha);
    s
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
    use crate::hlc::Hlc;
    use crate::model::{Document, NodeId, VersionVector};
    use proptest::prelude::*;

    fn doc_state(node: u16, hlc: u64, history: &[(u16, u64)], text: &str) -> State {
        let mut vv: VersionVector =
            VersionVector(history.iter().map(|(n, h)| (NodeId(*n), Hlc(*h))).collect());
        vv = vv.bumped(NodeId(node), Hlc(hlc));
        State {
            version: Version {
                hlc: Hlc(hlc),
                node: NodeId(node),
                vv,
            },
            value: Value::Document {
                document: Document {
                    id: "d".into(),
                    content: text.into(),
                    metadata: serde_json::json!({}),
                    embedding: None,
                },
            },
            conflicts: vec![],
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
        let a = doc_state(1, 10, &[], "a");
        let b = doc_state(2, 20, &[(1, 10)], "b");
        assert_eq!(
            apply(Some(a.clone()), &b, ConflictStrategy::LastWriterWins),
            Some(b.clone())
        );
        assert_eq!(
            resolve(Some(&b), &a, ConflictStrategy::LastWriterWins),
            Resolution::Keep
        );
        assert_eq!(
            resolve(Some(&b), &b, ConflictStrategy::LastWriterWins),
            Resolution::Keep
        );
    }

    #[test]
    fn concurrent_lww_is_symmetric_and_keeps_loser() {
        let a = doc_state(1, 10, &[], "a");
        let b = doc_state(2, 20, &[], "b");
        let on_a = apply(Some(a.clone()), &b, ConflictStrategy::LastWriterWins).unwrap();
        let on_b = apply(Some(b.clone()), &a, ConflictStrategy::LastWriterWins).unwrap();
        assert_eq!(on_a, on_b);
        assert_eq!(on_a.value, b.value);
        assert_eq!(on_a.conflicts.len(), 1);
        assert_eq!(on_a.conflicts[0].node, NodeId(1));
        // No ping-pong: each side's result is a no-op on the other.
        assert_eq!(
            resolve(Some(&on_a), &on_b, ConflictStrategy::LastWriterWins),
            Resolution::Keep
        );
    }

    #[test]
    fn delete_vs_update_same_outcome_both_orders() {
        let upd = doc_state(1, 30, &[(2, 5)], "updated");
        let mut del = doc_state(2, 20, &[(2, 5)], "");
        del.value = Value::Deleted;
        let x = apply(Some(upd.clone()), &del, ConflictStrategy::LastWriterWins).unwrap();
        let y = apply(Some(del.clone()), &upd, ConflictStrategy::LastWriterWins).unwrap();
        assert_eq!(x, y);
        assert_eq!(x.value, upd.value);
        assert_eq!(x.conflicts[0].value, Value::Deleted);
    }

    #[test]
    fn merge_settings_is_a_semilattice_join() {
        let mut a = CollectionSettings::default();
        a.search.hybrid_alpha = 0.2;
        a.chunking.max_tokens = 800;
        let mut b = CollectionSettings::default();
        b.search.hybrid_alpha = 0.9;
        b.search.hybrid = true;
        let ab = merge_settings(&a, &b);
        assert_eq!(ab.search.hybrid_alpha, 0.9);
        assert!(ab.search.hybrid);
        assert_eq!(ab.chunking.max_tokens, 800);
        assert_eq!(
            merge_settings(&ab, &b),
            ab,
            "idempotent under repeated merges"
        );
        assert_eq!(merge_settings(&ab, &ab), ab);
    }

    fn arb_state() -> impl Strategy<Value = State> {
        (
            1u16..4,
            1u64..50,
            proptest::collection::vec((1u16..4, 1u64..50), 0..3),
            "[a-c]{1,2}",
            any::<bool>(),
        )
            .prop_map(|(node, hlc, hist, text, deleted)| {
                let mut s = doc_state(node, hlc, &hist, &text);
                // A node's own vv entry must equal its newest write.
                let own = s.version.vv.get(NodeId(node)).max(Hlc(hlc));
                s.version.hlc = own;
                s.version.vv.0.insert(NodeId(node), own);
                if deleted {
                    s.value = Value::Deleted;
                }
                s
            })
    }

    fn arb_settings_state() -> impl Strategy<Value = State> {
        (arb_state(), 0u32..4, 0.0f64..1.0, any::<bool>()).prop_map(|(mut s, k, alpha, hybrid)| {
            let mut settings = CollectionSettings::default();
            settings.search.top_k = 1 + k;
            settings.search.hybrid_alpha = (alpha * 8.0).round() / 8.0;
            settings.search.hybrid = hybrid;
            s.value = Value::Collection { settings };
            s
        })
    }

    fn fold(states: &[State], s: ConflictStrategy) -> Option<State> {
        states.iter().fold(None, |acc, x| apply(acc, x, s))
    }

    proptest! {
        #[test]
        fn lww_apply_is_order_independent_and_idempotent(
            states in proptest::collection::vec(arb_state(), 1..6),
            seed in any::<u64>(),
        ) {
            // Distinct versions must be distinct (hlc, node): an origin never reuses an HLC.
            let mut keys = std::collections::BTreeSet::new();
            prop_assume!(states.iter().all(|s| keys.insert(s.version.order_key())));
            let s = ConflictStrategy::LastWriterWins;
            let once = fold(&states, s);
            let mut twice = states.clone();
            twice.extend(states.iter().cloned());
            prop_assert_eq!(fold(&twice, s).map(|x| (x.version.clone(), x.value.clone())),
                            once.clone().map(|x| (x.version.clone(), x.value.clone())));
            let mut shuffled = states.clone();
            let mut r = seed;
            for i in (1..shuffled.len()).rev() {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (r >> 33) as usize % (i + 1));
            }
            let other = fold(&shuffled, s);
            prop_assert_eq!(other.as_ref().map(|x| &x.version.vv), once.as_ref().map(|x| &x.version.vv));
            prop_assert_eq!(other.map(|x| x.value), once.map(|x| x.value));
        }

        #[test]
        fn merge_is_commutative_associative_idempotent(
            a in arb_settings_state(), b in arb_settings_state(), c in arb_settings_state()
        ) {
            let mut keys = std::collections::BTreeSet::new();
            prop_assume!([&a, &b, &c].iter().all(|s| keys.insert(s.version.order_key())));
            let m = ConflictStrategy::Merge;
            let ab = fold(&[a.clone(), b.clone()], m);
            let ba = fold(&[b.clone(), a.clone()], m);
            prop_assert_eq!(&ab, &ba);
            let abc = fold(&[a.clone(), b.clone(), c.clone()], m);
            let cab = fold(&[c.clone(), a.clone(), b.clone()], m);
            prop_assert_eq!(abc.as_ref().map(|x| (&x.version, &x.value)), cab.as_ref().map(|x| (&x.version, &x.value)));
            let aa = fold(&[a.clone(), a.clone()], m);
            prop_assert_eq!(aa, Some(State { conflicts: vec![], ..a.clone() }));
            if let (Value::Collection { settings: x }, Value::Collection { settings: y }) = (&a.value, &b.value) {
                let j = merge_settings(x, y);
                prop_assert_eq!(merge_settings(&j, y), j.clone());
                prop_assert_eq!(merge_settings(&j, x), j.clone());
            }
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
