//! Store laws against the real SQLite store on disk (and the in-memory store, which must
//! behave identically): cursor paging with ties never skips or repeats, and applying a set
//! of batches is idempotent and order-independent.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rag_sync::config::ConflictStrategy;
use rag_sync::hlc::{Hlc, HlcClock, ManualClock};
use rag_sync::model::{Change, ChangeBody, CollectionSettings, Document, NodeId};
use rag_sync::store::{ApplyMode, ChangeFilter, MemoryStore, SqliteStore, Store, StoreStats};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn frozen_clock(ms: u64) -> HlcClock {
    HlcClock::new(Arc::new(ManualClock::new(ms)), 500)
}

fn sqlite(dir: &tempfile::TempDir, node: u16, ms: u64) -> SqliteStore {
    SqliteStore::open(
        dir.path().join(format!("n{node}.db")),
        Some(node),
        frozen_clock(ms),
    )
    .unwrap()
}

fn doc(id: &str, content: &str) -> Document {
    Document {
        id: id.into(),
        content: content.into(),
        metadata: Default::default(),
        embedding: None,
    }
}

/// The full log of a store without node-local cursors and Insert/Update distinctions.
async fn state(s: &dyn Store) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let mut since = Hlc::ZERO;
    loop {
        let page = s
            .changes_since(since, 7, &ChangeFilter::default())
            .await
            .unwrap();
        for c in page.changes {
            let mut v = serde_json::to_value(&c).unwrap();
            v.as_object_mut().unwrap().remove("cursor");
            let op = v["op"]
                .as_str()
                .unwrap()
                .replace("DocumentInsert", "DocumentUpdate");
            v["op"] = serde_json::json!(op);
            let key = format!(
                "{}/{:?}/{}",
                c.body.collection(),
                c.body.key().kind,
                c.body.key().id
            );
            assert!(out.insert(key, v).is_none(), "record listed twice");
        }
        since = page.watermark;
        if !page.has_more {
            return out;
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(u8),
    Delete(u8),
    Read(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            4 => (0u8..6).prop_map(Op::Write),
            1 => (0u8..6).prop_map(Op::Delete),
            3 => (1usize..8).prop_map(Op::Read),
        ],
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A reader that follows the watermark while writes keep committing (with a frozen wall
    /// clock, so every HLC shares one millisecond and differs only in its logical counter)
    /// ends with exactly the store's state: nothing skipped, nothing stale.
    #[test]
    fn paging_with_ties_never_skips(ops in ops()) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let stores: Vec<Box<dyn Store>> = vec![
                Box::new(sqlite(&dir, 1, 1_000_000)),
                Box::new(MemoryStore::new(NodeId(1), frozen_clock(1_000_000))),
            ];
            for s in &stores {
                s.put_collection("c", CollectionSettings::default()).await.unwrap();
                let mut seen: BTreeMap<String, ChangeBody> = BTreeMap::new();
                let mut cursor = Hlc::ZERO;
                let mut n = 0;
                let read = |page: rag_sync::store::ChangesPage, seen: &mut BTreeMap<_, _>| {
                    for c in page.changes {
                        let key = format!("{:?}", c.body.key());
                        seen.insert(key, c.body.clone());
                    }
                    page.watermark
                };
                for op in &ops {
                    match op {
                        Op::Write(k) => {
                            n += 1;
                            s.put_document("c", doc(&format!("d{k}"), &format!("v{n}"))).await.unwrap();
                        }
                        Op::Delete(k) => {
                            let _ = s.delete_document("c", &format!("d{k}")).await;
                        }
                        Op::Read(limit) => {
                            let page = s.changes_since(cursor, *limit, &ChangeFilter::default()).await.unwrap();
                            prop_assert!(page.changes.len() <= *limit);
                            let wm = read(page, &mut seen);
                            prop_assert!(wm >= cursor, "the watermark never moves back");
                            cursor = wm;
                        }
                    }
                }
                loop {
                    let page = s.changes_since(cursor, 3, &ChangeFilter::default()).await.unwrap();
                    let more = page.has_more;
                    cursor = read(page, &mut seen);
                    if !more { break; }
                }
                let mut expected = BTreeMap::new();
                let mut since = Hlc::ZERO;
                loop {
                    let page = s.changes_since(since, 1000, &ChangeFilter::default()).await.unwrap();
                    for c in &page.changes {
                        expected.insert(format!("{:?}", c.body.key()), c.body.clone());
                    }
                    since = page.watermark;
                    if !page.has_more { break; }
                }
                prop_assert_eq!(&seen, &expected);
            }
            Ok(())
        })?;
    }

    /// Applying the same changes once, twice, or in any order gives the same state, on
    /// SQLite and in memory alike.
    #[test]
    fn apply_is_idempotent_and_order_independent(
        writes in proptest::collection::vec((0usize..3, 0u8..4, any::<bool>()), 1..25),
        seed in any::<u64>(),
    ) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            // Three origins write concurrently (they never sync), so conflicts abound.
            let origins: Vec<MemoryStore> = (0..3)
                .map(|i| MemoryStore::new(NodeId(10 + i as u16), frozen_clock(2_000_000 + i as u64)))
                .collect();
            for o in &origins {
                o.put_collection("c", CollectionSettings::default()).await.unwrap();
            }
            for (n, (o, k, del)) in writes.iter().enumerate() {
                let o = &origins[*o];
                if *del {
                    let _ = o.delete_document("c", &format!("d{k}")).await;
                } else {
                    o.put_document("c", doc(&format!("d{k}"), &format!("w{n}"))).await.unwrap();
                }
            }
            let mut all: Vec<Change> = Vec::new();
            for o in &origins {
                all.extend(o.changes_since(Hlc::ZERO, 1000, &ChangeFilter::default()).await.unwrap().changes);
            }
            let mut shuffled = all.clone();
            let mut r = seed;
            for i in (1..shuffled.len()).rev() {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (r >> 33) as usize % (i + 1));
            }
            let targets: Vec<Box<dyn Store>> = vec![
                Box::new(sqlite(&dir, 1, 3_000_000)),
                Box::new(sqlite(&dir, 2, 3_000_000)),
                Box::new(MemoryStore::new(NodeId(3), frozen_clock(3_000_000))),
            ];
            let lww = ConflictStrategy::LastWriterWins;
            targets[0].apply_changes(all.clone(), lww, ApplyMode::AllOrNothing, None).await.unwrap();
            for chunk in shuffled.chunks(3) {
                targets[1].apply_changes(chunk.to_vec(), lww, ApplyMode::AllOrNothing, None).await.unwrap();
            }
            targets[1].apply_changes(all.clone(), lww, ApplyMode::AllOrNothing, None).await.unwrap();
            for c in shuffled.iter().rev() {
                targets[2].apply_changes(vec![c.clone()], lww, ApplyMode::AllOrNothing, None).await.unwrap();
            }
            let reference = state(targets[0].as_ref()).await;
            for t in &targets[1..] {
                prop_assert_eq!(&state(t.as_ref()).await, &reference);
            }
            Ok(())
        })?;
    }
}

#[test]
fn checkpoint_is_saved_with_the_batch_and_drift_stops_at_the_prefix() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let origin = MemoryStore::new(NodeId(7), frozen_clock(5_000_000));
        origin
            .put_collection("c", CollectionSettings::default())
            .await
            .unwrap();
        origin.put_document("c", doc("ok", "fine")).await.unwrap();
        let far = MemoryStore::new(NodeId(8), frozen_clock(5_000_000 + 3_600_000));
        far.put_collection("c", CollectionSettings::default())
            .await
            .unwrap();
        far.put_document("c", doc("late", "from the future"))
            .await
            .unwrap();
        let mut changes = origin
            .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
            .await
            .unwrap()
            .changes;
        let future = far
            .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
            .await
            .unwrap()
            .changes;
        changes.push(future[1].clone());
        changes.push(
            origin
                .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
                .await
                .unwrap()
                .changes[1]
                .clone(),
        );

        let target = sqlite(&dir, 1, 5_000_000);
        let head_before = target.head().await.unwrap();
        let key = rag_sync::store::CheckpointKey::new(
            NodeId(7),
            rag_sync::store::CheckpointDirection::Pull,
            &ChangeFilter::default(),
        );
        let cp = rag_sync::store::Checkpoint {
            key: key.clone(),
            incarnation: "x".into(),
            cursor: Hlc(999_999_999_999),
            updated_ms: 1,
        };
        // All-or-nothing: refused whole, nothing written.
        let err = target
            .apply_changes(
                changes.clone(),
                ConflictStrategy::LastWriterWins,
                ApplyMode::AllOrNothing,
                Some(cp.clone()),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("clock drift"), "{err}");
        assert_eq!(target.head().await.unwrap(), head_before);
        assert!(target.checkpoint(&key).await.unwrap().is_none());
        // Prefix: the two changes before the refused one apply, the checkpoint stops there.
        let report = target
            .apply_changes(
                changes.clone(),
                ConflictStrategy::LastWriterWins,
                ApplyMode::Prefix,
                Some(cp),
            )
            .await
            .unwrap();
        assert_eq!(report.applied, 2);
        assert!(report.stopped.is_some());
        let saved = target.checkpoint(&key).await.unwrap().unwrap();
        assert_eq!(
            saved.cursor, changes[1].cursor,
            "checkpoint just before the refused change"
        );
        assert!(
            target.clock().peek().wall_ms() < 5_000_000 + 1000,
            "the refused HLC never moved the clock"
        );
    });
}

/// `s` with an empty collection "c".
async fn with_collection(s: SqliteStore) -> SqliteStore {
    s.put_collection("c", CollectionSettings::default())
        .await
        .unwrap();
    s
}

/// Updates append to the log. The versions they replace are skipped by every reader (a
/// record is never listed twice), counted as superseded, and deleted by compaction, which
/// changes nothing any reader sees, even one half-way through the log.
#[test]
fn superseded_versions_are_skipped_and_compacted() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let s = with_collection(sqlite(&dir, 1, 1_000_000)).await;
        for i in 0..20 {
            s.put_document("c", doc(&format!("d{i:02}"), "v0"))
                .await
                .unwrap();
        }
        // A reader that has read the first part of the log before the updates.
        let first = s
            .changes_since(Hlc::ZERO, 5, &ChangeFilter::default())
            .await
            .unwrap();
        assert!(first.has_more);
        for round in 1..=3 {
            for i in (0..20).step_by(2) {
                s.put_document("c", doc(&format!("d{i:02}"), &format!("v{round}")))
                    .await
                    .unwrap();
            }
        }
        s.delete_document("c", "d01").await.unwrap();
        s.delete_document("c", "d03").await.unwrap();

        let stats = s.stats().await.unwrap();
        assert_eq!(stats.documents, 18);
        assert_eq!(stats.tombstones, 2);
        assert_eq!(stats.superseded, 10 * 3 + 2);
        let backlog = s.backlog(Hlc::ZERO, &[]).await.unwrap();
        assert_eq!(backlog.pending, 21, "one pending change per record");
        let before = state(&s).await;
        assert_eq!(before.len(), 21);
        assert_eq!(before["c/Document/d00"]["document"]["content"], "v3");
        assert_eq!(before["c/Document/d02"]["document"]["content"], "v3");
        assert_eq!(before["c/Document/d05"]["document"]["content"], "v0");
        assert_eq!(before["c/Document/d01"]["op"], "DocumentDelete");

        assert_eq!(s.compact().await.unwrap(), 32);
        assert_eq!(s.stats().await.unwrap().superseded, 0);
        assert_eq!(state(&s).await, before);

        // The early reader goes on from its watermark and ends with the same state.
        let mut seen: BTreeMap<String, ChangeBody> = BTreeMap::new();
        let mut since = Hlc::ZERO;
        let mut page = first;
        loop {
            for c in &page.changes {
                let key = format!(
                    "{}/{:?}/{}",
                    c.body.collection(),
                    c.body.key().kind,
                    c.body.key().id
                );
                seen.insert(key, c.body.clone());
            }
            since = since.max(page.watermark);
            if !page.has_more {
                break;
            }
            page = s
                .changes_since(since, 5, &ChangeFilter::default())
                .await
                .unwrap();
        }
        let mut expected = BTreeMap::new();
        let all = s
            .changes_since(Hlc::ZERO, 1000, &ChangeFilter::default())
            .await
            .unwrap();
        for c in &all.changes {
            let key = format!(
                "{}/{:?}/{}",
                c.body.collection(),
                c.body.key().kind,
                c.body.key().id
            );
            expected.insert(key, c.body.clone());
        }
        assert_eq!(seen.len(), 21);
        assert_eq!(seen, expected);

        // And all of it is on disk.
        drop(s);
        let s = sqlite(&dir, 1, 1_000_000);
        assert_eq!(state(&s).await, before);
        assert_eq!(s.stats().await.unwrap().documents, 18);
    });
}

/// Polls the store's stats until `done` holds; fails after 30 s.
async fn wait_for_stats(s: &dyn Store, what: &str, done: impl Fn(&StoreStats) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done(&s.stats().await.unwrap()) {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 30 s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Without being asked, the writer deletes superseded versions once writes stop.
#[test]
fn the_idle_writer_compacts_on_its_own() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let s = with_collection(sqlite(&dir, 1, 1_000_000)).await;
        for v in 0..5 {
            for i in 0..50 {
                s.put_document("c", doc(&format!("d{i}"), &format!("v{v}")))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(s.stats().await.unwrap().superseded, 200);
        let before = state(&s).await;
        wait_for_stats(&s, "superseded rows compacted", |st| st.superseded == 0).await;
        assert_eq!(state(&s).await, before);
    });
}

/// Once the store says no checkpoint is pending, the database file alone (without its
/// write-ahead log) holds every commit.
#[test]
fn commits_reach_the_database_file_and_the_store_says_when() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let s = with_collection(sqlite(&dir, 1, 1_000_000)).await;
        for i in 0..30 {
            s.put_document("c", doc(&format!("d{i}"), "text"))
                .await
                .unwrap();
        }
        wait_for_stats(&s, "the WAL checkpointed", |st| !st.checkpoint_pending).await;
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("n1.db"), copy.path().join("n1.db")).unwrap();
        let from_file = sqlite(&copy, 1, 1_000_000);
        assert_eq!(from_file.stats().await.unwrap().documents, 30);
        assert_eq!(state(&from_file).await, state(&s).await);
    });
}
