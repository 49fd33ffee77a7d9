//! The embeddable library in-process: two `SyncManager`s on real SQLite stores serving the
//! real router over real HTTP on loopback. Covers the manager API a RAG service embeds
//! (add/remove peers, sync with one, anti-entropy recovery) and tombstone GC.

use std::sync::Arc;
use std::time::Duration;

use rag_sync::config::{Direction, PeerConfig};
use rag_sync::hlc::{Hlc, HlcClock, ManualClock, SystemClock, WallClock};
use rag_sync::model::{CollectionSettings, Document, RecordKey, Value};
use rag_sync::store::{ChangeFilter, CheckpointDirection, CheckpointKey, SqliteStore, Store};
use rag_sync::sync::client::ClientOptions;
use rag_sync::sync::SyncManager;

struct Node {
    manager: Arc<SyncManager>,
    url: String,
    _dir: tempfile::TempDir,
}

async fn node(id: u16) -> Node {
    node_with_clock(id, HlcClock::system()).await
}

async fn node_with_clock(id: u16, clock: HlcClock) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("rag.db"), Some(id), clock).unwrap();
    let manager = SyncManager::open(Arc::new(store), ClientOptions::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = rag_sync::node::app(manager.clone(), rag_sync::auth::Access::default());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Node {
        manager,
        url,
        _dir: dir,
    }
}

fn doc(id: &str) -> Document {
    Document {
        id: id.into(),
        content: format!("content of {id}"),
        metadata: Default::default(),
        embedding: None,
    }
}

fn peer(id: &str, url: &str) -> PeerConfig {
    PeerConfig {
        peer_id: id.into(),
        endpoint: url.into(),
        address: None,
        direction: Direction::Pull,
        collections: vec![],
        exclude_collections: vec![],
    }
}

#[tokio::test]
async fn manager_api_and_anti_entropy_recovery() {
    let a = node(1).await;
    let b = node(2).await;
    let sa = a.manager.store().clone();
    let sb = b.manager.store().clone();
    sa.put_collection("docs", CollectionSettings::default())
        .await
        .unwrap();
    for i in 0..20 {
        sa.put_document("docs", doc(&format!("d{i}")))
            .await
            .unwrap();
    }
    b.manager.add_peer(peer("a", &a.url)).await.unwrap();
    assert_eq!(b.manager.peer_ids(), ["a"]);
    let stats = b.manager.sync_with("a").await.unwrap();
    assert_eq!((stats.pulled, stats.error.clone()), (21, None), "{stats:?}");
    assert!(b.manager.sync_with("ghost").await.is_err());

    // Something the log path cannot see: b's checkpoint is moved past a change it never got.
    sa.put_document("docs", doc("missed")).await.unwrap();
    let wm = reqwest::get(format!("{}/sync/watermark", a.url))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let key = CheckpointKey::new(
        sa.node_id(),
        CheckpointDirection::Pull,
        &ChangeFilter::default(),
    );
    let mut cp = sb.checkpoint(&key).await.unwrap().unwrap();
    cp.cursor = Hlc::from_hex(wm["hlc"].as_str().unwrap()).unwrap();
    sb.save_checkpoint(cp).await.unwrap();
    let normal = b.manager.sync_with("a").await.unwrap();
    assert_eq!(normal.pulled, 0, "the normal round cannot see it");
    assert!(sb
        .get_record(&RecordKey::document("docs", "missed"))
        .await
        .unwrap()
        .is_none());
    // Recovery re-reads both logs from the start and repairs it.
    let rec = b.manager.recover_from_partition("a").await.unwrap();
    assert_eq!(rec.error, None);
    assert_eq!(
        rec.pulled, 1,
        "only the missing change alters state: {rec:?}"
    );
    assert!(sb
        .get_record(&RecordKey::document("docs", "missed"))
        .await
        .unwrap()
        .is_some());

    // remove_peer takes effect at once, and is persisted.
    b.manager.remove_peer("a").await.unwrap();
    assert!(b.manager.peer_ids().is_empty());
    assert!(b.manager.remove_peer("a").await.is_err());
    assert!(sb.load_config().await.unwrap().unwrap().peers.is_empty());
}

#[tokio::test]
async fn scheduler_syncs_on_its_own_and_stops() {
    let a = node(3).await;
    let b = node(4).await;
    a.manager
        .store()
        .put_collection("docs", CollectionSettings::default())
        .await
        .unwrap();
    let mut cfg = b.manager.config();
    cfg.interval_seconds = 1;
    cfg.peers.push(peer("a", &a.url));
    b.manager.set_config(cfg).await.unwrap();
    b.manager.start_scheduler();
    a.manager
        .store()
        .put_document("docs", doc("x"))
        .await
        .unwrap();
    let key = RecordKey::document("docs", "x");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while b.manager.store().get_record(&key).await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler never synced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.manager.stop_scheduler();
}

#[tokio::test]
async fn tombstones_are_purged_only_below_the_horizon_and_after_the_minimum_age() {
    let dir = tempfile::tempdir().unwrap();
    let wall = Arc::new(ManualClock::new(10_000_000));
    let store = SqliteStore::open(
        dir.path().join("gc.db"),
        Some(9),
        HlcClock::new(wall.clone(), 500),
    )
    .unwrap();
    store
        .put_collection("c", CollectionSettings::default())
        .await
        .unwrap();
    for id in ["old", "young", "live"] {
        store.put_document("c", doc(id)).await.unwrap();
    }
    let old = store.delete_document("c", "old").await.unwrap();
    wall.set(10_060_000);
    let young = store.delete_document("c", "young").await.unwrap();
    let head = store.head().await.unwrap();
    wall.set(10_090_000);
    // Horizon above both, minimum age 60 s: only the tombstone older than 60 s goes.
    let horizon = Hlc::new(10_080_000, 0);
    assert_eq!(store.gc_tombstones(horizon, 60_000).await.unwrap(), 1);
    let gone = store
        .get_record(&RecordKey::document("c", "old"))
        .await
        .unwrap();
    assert!(gone.is_none(), "{old:?}");
    let kept = store
        .get_record(&RecordKey::document("c", "young"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.value, Value::Deleted);
    assert_eq!(kept.version, young.version);
    // A horizon below a tombstone keeps it, however old.
    wall.set(20_000_000);
    assert_eq!(
        store
            .gc_tombstones(Hlc::new(10_000_000, 0), 0)
            .await
            .unwrap(),
        0
    );
    // Live records are never purged, and the head never moves back.
    assert!(store
        .get_record(&RecordKey::document("c", "live"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .gc_tombstones(Hlc::new(30_000_000, 0), 0)
            .await
            .unwrap(),
        1
    );
    assert!(store.head().await.unwrap() >= head);
}

/// Pulled pages give their share of the node's page budget back, whether a pull ends
/// normally or stops at a refused change with pages fetched behind it (a leak would stall
/// every later pull of the node).
#[tokio::test]
async fn pulled_pages_give_their_memory_budget_back() {
    let a = node(5).await;
    let hour_ahead = SystemClock.now_ms() + 3_600_000;
    let skewed = node_with_clock(
        6,
        HlcClock::new(Arc::new(ManualClock::new(hour_ahead)), 500),
    )
    .await;
    let b = node(7).await;
    for (n, docs) in [(&a, 20), (&skewed, 6)] {
        let s = n.manager.store();
        s.put_collection("docs", CollectionSettings::default())
            .await
            .unwrap();
        for i in 0..docs {
            s.put_document("docs", doc(&format!("d{i}"))).await.unwrap();
        }
    }
    // One change a page: many pages, queued ahead of the applier.
    let mut config = b.manager.config();
    config.batch_size = 1;
    config.peers = vec![peer("a", &a.url), peer("skewed", &skewed.url)];
    b.manager.set_config(config).await.unwrap();
    let budget_returned = || async {
        let started = std::time::Instant::now();
        while b.manager.pulled_pages_in_memory() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} changes' worth of pages still held",
                b.manager.pulled_pages_in_memory()
            );
            tokio::task::yield_now().await;
        }
    };

    let stats = b.manager.sync_with("a").await.unwrap();
    assert_eq!((stats.pulled, stats.error.clone()), (21, None), "{stats:?}");
    budget_returned().await;

    let stats = b.manager.sync_with("skewed").await.unwrap();
    let error = stats.error.clone().unwrap_or_default();
    assert!(error.contains("clock drift"), "{stats:?}");
    assert_eq!(stats.pulled, 0);
    budget_returned().await;

    // And the node pulls as before.
    a.manager
        .store()
        .put_document("docs", doc("later"))
        .await
        .unwrap();
    let stats = b.manager.sync_with("a").await.unwrap();
    assert_eq!((stats.pulled, stats.error.clone()), (1, None), "{stats:?}");
    budget_returned().await;
}
