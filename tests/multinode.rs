//! Multi-node sync over real HTTP between real `rag-node` processes with the real SQLite
//! store on disk. Each test ends with the invariant: every node holds identical data, and
//! every acknowledged write is present or beaten by a version that records it as a conflict.
//! The peers here sync in rounds only (live delivery off): the scenarios are about the round
//! rules, and writes they make concurrent must not be delivered between them (live delivery
//! has its own tests in `tests/live.rs` and the chaos soak).

mod support;

use serde_json::json;
use support::node::{
    assert_acks_survive, assert_converged, sync_until_quiet, wait_for, Ack, NodeOptions, TestNode,
    WAIT,
};

async fn nodes(names: &[(&str, u8)]) -> Vec<TestNode> {
    let mut out = Vec::new();
    for (name, octet) in names {
        out.push(TestNode::start(name, *octet, NodeOptions::default()).await);
    }
    out
}

fn errors(stats: &[serde_json::Value]) -> Vec<String> {
    stats
        .iter()
        .filter_map(|s| s["error"].as_str().map(str::to_string))
        .collect()
}

/// 1. Partition and heal with writes on both sides. The naive "since my max HLC" design
/// loses B's write made while cut off once A's clock has moved past it.
#[tokio::test]
async fn partition_and_heal_converges() {
    let n = nodes(&[("a", 11), ("b", 12), ("c", 13)]).await;
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    let mut acks: Vec<Ack> = Vec::new();
    a.create_collection("docs", json!({})).await;
    a.set_round_peers(&[(b, "both"), (c, "both")], 100).await;
    b.set_round_peers(&[(a, "both"), (c, "both")], 100).await;
    c.set_round_peers(&[(a, "both"), (b, "both")], 100).await;
    for i in 0..20 {
        acks.push(a.put_doc("docs", &format!("base-{i}"), "base").await);
    }
    sync_until_quiet(&[a, b, c]).await;

    // Partition {a} | {b, c}: a's peers point at dead addresses, as a cut link would.
    let dead = support::node::free_port("127.0.0.11");
    let dead_url = format!("http://127.0.0.11:{dead}");
    a.ok("PUT", "/admin/config", Some(json!({"peers": [
        {"peer_id": "b", "endpoint": dead_url, "direction": "both"},
        {"peer_id": "c", "endpoint": dead_url, "direction": "both"}], "interval_seconds": 3600, "batch_size": 100, "live": false}))).await;
    b.set_round_peers(&[(c, "both")], 100).await;
    c.set_round_peers(&[(b, "both")], 100).await;
    // b writes first (lower HLCs), then a writes a lot (its HLC moves far past b's writes).
    for i in 0..10 {
        acks.push(
            b.put_doc("docs", &format!("b-{i}"), "from b while cut off")
                .await,
        );
    }
    acks.push(b.delete_doc("docs", "base-3").await);
    for i in 0..30 {
        acks.push(
            a.put_doc("docs", &format!("a-{i}"), "from a while cut off")
                .await,
        );
    }
    acks.push(a.put_doc("docs", "base-5", "a's edit").await);
    acks.push(c.put_doc("docs", "base-5", "c's concurrent edit").await);
    let cut = a.sync().await;
    assert_eq!(
        errors(&cut).len(),
        2,
        "a cannot reach anyone while partitioned: {cut:?}"
    );
    assert!(errors(&cut)[0].contains("connection failed"), "{cut:?}");
    assert!(
        cut.iter().all(|s| s["error_code"] == "peer_unreachable"),
        "an unreachable peer has its own code: {cut:?}"
    );
    sync_until_quiet(&[b, c]).await;

    // Heal.
    a.set_round_peers(&[(b, "both"), (c, "both")], 100).await;
    b.set_round_peers(&[(a, "both"), (c, "both")], 100).await;
    c.set_round_peers(&[(a, "both"), (b, "both")], 100).await;
    sync_until_quiet(&[a, b, c]).await;

    let dump = assert_converged(&[a, b, c]).await;
    assert_acks_survive(&dump, &acks);
    let docs = a.documents("docs").await;
    assert_eq!(docs.len(), 20 - 1 + 10 + 30);
    assert!(!docs.contains_key("base-3"));
    for i in 0..10 {
        assert_eq!(docs[&format!("b-{i}")], "from b while cut off");
    }
    // The concurrent edit of base-5 is resolved the same way everywhere, loser retained.
    let conflicts = b
        .ok("GET", "/collections/docs/documents/base-5/conflicts", None)
        .await;
    assert_eq!(
        conflicts["conflicts"].as_array().unwrap().len(),
        1,
        "{conflicts}"
    );
}

/// 2. Relay A→B→C where C syncs only with B: an old-HLC write of A reaches B after C's
/// cursor on B moved past that HLC; C still gets it, because B's feed is ordered by B's own
/// commit cursor, not by the change's HLC.
#[tokio::test]
async fn relay_delivers_late_old_hlc_writes() {
    let n = nodes(&[("a", 21), ("b", 22), ("c", 23)]).await;
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    let mut acks = Vec::new();
    a.create_collection("docs", json!({})).await;
    b.create_collection("docs", json!({})).await;
    // A writes early: these carry old HLCs.
    for i in 0..5 {
        acks.push(
            a.put_doc("docs", &format!("old-{i}"), "written early on a")
                .await,
        );
    }
    // B writes later, and C pulls from B: C's cursor on B moves past A's old HLCs.
    for i in 0..5 {
        acks.push(
            b.put_doc("docs", &format!("late-{i}"), "written later on b")
                .await,
        );
    }
    c.set_round_peers(&[(b, "pull")], 2).await;
    assert!(errors(&c.sync().await).is_empty());
    let cp_before = c.status().await["peers"][0]["checkpoint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        cp_before.as_str() > acks[0].hlc.as_str(),
        "C's cursor on B is past A's old writes"
    );
    // Only now does B pull from A: A's old-HLC writes arrive at B late.
    b.set_round_peers(&[(a, "pull")], 2).await;
    assert!(errors(&b.sync().await).is_empty());
    assert!(errors(&c.sync().await).is_empty());
    let docs = c.documents("docs").await;
    for i in 0..5 {
        assert_eq!(
            docs.get(&format!("old-{i}")).map(String::as_str),
            Some("written early on a")
        );
    }
    // Close the loop so everyone converges.
    a.set_round_peers(&[(c, "pull")], 2).await;
    sync_until_quiet(&[a, b, c]).await;
    let dump = assert_converged(&[a, b, c]).await;
    assert_acks_survive(&dump, &acks);
}

/// 3. A node whose clock runs an hour ahead: its changes are refused with a clear error and
/// never move anyone's clock or cursor; sync among the others goes on.
#[tokio::test]
async fn skewed_clock_is_refused_without_stalling_others() {
    let a = TestNode::start("a", 31, NodeOptions::default()).await;
    let b = TestNode::start("b", 32, NodeOptions::default()).await;
    let s = TestNode::start(
        "skewed",
        33,
        NodeOptions {
            clock_offset_ms: 3_600_000,
            ..Default::default()
        },
    )
    .await;
    a.create_collection("docs", json!({})).await;
    // Pages of one change: the refused one is followed by more pages than a puller queues.
    a.set_round_peers(&[(&b, "pull"), (&s, "pull")], 1).await;
    b.set_round_peers(&[(&a, "pull"), (&s, "pull")], 50).await;
    s.set_round_peers(&[(&a, "pull")], 50).await;
    let mut acks = vec![a.put_doc("docs", "a1", "from a").await];
    // The skewed node gets the collection from a (its own clock jumps, which is its affair).
    let first = s.sync().await;
    assert!(errors(&first).is_empty(), "{first:?}");
    for i in 1..=6 {
        s.put_doc("docs", &format!("s{i}"), "from the future").await;
    }
    let a_clock_before = a.status().await["watermark"].as_str().unwrap().to_string();

    // The pull stops at the first refused page, and the round ends (the pages fetched
    // behind it are dropped).
    let stats = tokio::time::timeout(std::time::Duration::from_secs(60), a.sync())
        .await
        .expect("the round ends when a pull stops at a refused change");
    let errs = errors(&stats);
    assert_eq!(errs.len(), 1, "{stats:?}");
    assert!(
        errs[0].contains("clock drift") && errs[0].contains("ahead"),
        "clear error: {}",
        errs[0]
    );
    let failed: Vec<_> = stats.iter().filter(|s| !s["error"].is_null()).collect();
    assert_eq!(failed[0]["error_code"], "clock_drift", "{stats:?}");
    // a's state, clock and checkpoint on the skewed node did not move.
    let status = a.status().await;
    assert_eq!(status["watermark"].as_str().unwrap(), a_clock_before);
    let peer = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == "skewed")
        .unwrap()
        .clone();
    assert!(peer["last_error"].as_str().unwrap().contains("clock drift"));
    assert_eq!(peer["last_error_code"], "clock_drift", "{peer}");
    assert!(
        a.call("GET", "/collections/docs/documents/s1", None)
            .await
            .0
            == 404
    );

    // Nothing else stalls: a and b keep syncing with each other.
    acks.push(b.put_doc("docs", "b1", "from b").await);
    acks.push(a.put_doc("docs", "a2", "from a again").await);
    a.sync().await;
    b.sync().await;
    a.sync().await;
    let dump = assert_converged(&[&a, &b]).await;
    assert_acks_survive(&dump, &acks);
    assert!(!dump.contains_key("docs/s1"));
    // A push from the skewed node is refused whole with a 4xx, too.
    let page = s
        .ok(
            "GET",
            "/sync/changes?since=0000000000000000&limit=100",
            None,
        )
        .await;
    let (code, body) = a
        .call(
            "POST",
            "/sync/changes",
            Some(json!({"changes": page["changes"], "source_watermark": page["watermark"]})),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"], "clock_drift");
    assert_eq!(
        a.status().await["watermark"].as_str().unwrap(),
        dump_head(&a).await
    );
}

async fn dump_head(n: &TestNode) -> String {
    n.ok("GET", "/sync/watermark", None).await["hlc"]
        .as_str()
        .unwrap()
        .to_string()
}

/// 4. Writes committing while a pull pages through the log, for page sizes 1..7: nothing
/// is skipped.
#[tokio::test]
async fn writes_during_paging_are_never_skipped() {
    let a = TestNode::start("a", 41, NodeOptions::default()).await;
    let b = TestNode::start("b", 42, NodeOptions::default()).await;
    a.create_collection("docs", json!({})).await;
    let mut acks = Vec::new();
    for i in 0..40 {
        acks.push(a.put_doc("docs", &format!("pre-{i}"), "before").await);
    }
    for limit in 1..=7usize {
        b.set_round_peers(&[(&a, "pull")], limit).await;
        let writer = async {
            let mut out = Vec::new();
            for i in 0..15 {
                out.push(
                    a.put_doc("docs", &format!("during-{limit}-{i}"), "during")
                        .await,
                );
                // Rewrite an early document too: its log entry moves behind the reader.
                out.push(
                    a.put_doc("docs", &format!("pre-{}", i % 40), &format!("v{limit}"))
                        .await,
                );
            }
            out
        };
        let (stats, written) = tokio::join!(b.sync(), writer);
        assert!(errors(&stats).is_empty(), "{stats:?}");
        acks.extend(written);
    }
    b.sync().await;
    let dump = assert_converged(&[&a, &b]).await;
    assert_acks_survive(&dump, &acks);
    assert_eq!(b.documents("docs").await.len(), 40 + 7 * 15);
}

/// 5. The same document updated concurrently on two nodes: one winner everywhere, the
/// loser retained as a conflict record everywhere, and later syncs do not ping-pong.
#[tokio::test]
async fn concurrent_update_same_winner_no_ping_pong() {
    let n = nodes(&[("a", 51), ("b", 52), ("c", 53)]).await;
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    a.create_collection("docs", json!({})).await;
    a.put_doc("docs", "d", "original").await;
    a.set_round_peers(&[(b, "both"), (c, "both")], 100).await;
    b.set_round_peers(&[(a, "both"), (c, "both")], 100).await;
    c.set_round_peers(&[(a, "both"), (b, "both")], 100).await;
    sync_until_quiet(&[a, b, c]).await;
    let acks = vec![
        a.put_doc("docs", "d", "edit on a").await,
        b.put_doc("docs", "d", "edit on b").await,
    ];
    sync_until_quiet(&[a, b, c]).await;
    let dump = assert_converged(&[a, b, c]).await;
    assert_acks_survive(&dump, &acks);
    let winner = if (acks[0].hlc.as_str(), acks[0].node.as_str())
        > (acks[1].hlc.as_str(), acks[1].node.as_str())
    {
        &acks[0]
    } else {
        &acks[1]
    };
    let loser = if std::ptr::eq(winner, &acks[0]) {
        &acks[1]
    } else {
        &acks[0]
    };
    for node in [a, b, c] {
        let doc = node.ok("GET", "/collections/docs/documents/d", None).await;
        assert_eq!(
            doc["content"].as_str(),
            winner.content.as_deref(),
            "on {}",
            node.name
        );
        let cs = node
            .ok("GET", "/collections/docs/documents/d/conflicts", None)
            .await;
        let cs = cs["conflicts"].as_array().unwrap().clone();
        assert_eq!(cs.len(), 1, "on {}: {cs:?}", node.name);
        assert_eq!(cs[0]["hlc"], loser.hlc.as_str());
        assert_eq!(
            cs[0]["value"]["document"]["content"].as_str(),
            loser.content.as_deref()
        );
    }
    // No ping-pong: further rounds change nothing and detect nothing.
    let heads: Vec<String> = futures::future::join_all([a, b, c].map(dump_head)).await;
    for node in [a, b, c] {
        for s in node.sync().await {
            assert_eq!(s["pulled"], 0, "{s}");
            assert_eq!(s["conflicts"], 0, "{s}");
        }
    }
    let after: Vec<String> = futures::future::join_all([a, b, c].map(dump_head)).await;
    assert_eq!(heads, after, "a quiet cluster keeps still watermarks");
    let sync_conflicts = c.ok("GET", "/sync/conflicts?collection=docs", None).await;
    assert_eq!(sync_conflicts["conflicts"].as_array().unwrap().len(), 1);
}

/// 6. Delete vs concurrent update, in both orders of arrival: the same outcome everywhere.
#[tokio::test]
async fn delete_vs_concurrent_update_both_orders() {
    let mut outcomes = Vec::new();
    for (round, first_puller) in [("x", 0usize), ("y", 1usize)] {
        let n = nodes(&[("a", 61), ("b", 62)]).await;
        let (a, b) = (&n[0], &n[1]);
        a.create_collection("docs", json!({})).await;
        a.put_doc("docs", "d", "original").await;
        b.set_round_peers(&[(a, "pull")], 10).await;
        b.sync().await;
        a.set_round_peers(&[(b, "pull")], 10).await;
        let acks = vec![
            a.delete_doc("docs", "d").await,
            b.put_doc("docs", "d", &format!("update {round}")).await,
        ];
        // Order of arrival differs between the rounds.
        let order = if first_puller == 0 { [a, b] } else { [b, a] };
        for node in order {
            node.sync().await;
        }
        sync_until_quiet(&[a, b]).await;
        let dump = assert_converged(&[a, b]).await;
        assert_acks_survive(&dump, &acks);
        let rec = dump["docs/d"].clone();
        let winner_is_delete = (acks[0].hlc.as_str(), acks[0].node.as_str())
            > (acks[1].hlc.as_str(), acks[1].node.as_str());
        assert_eq!(rec["op"] == "DocumentDelete", winner_is_delete, "{rec}");
        assert_eq!(rec["conflicts"].as_array().unwrap().len(), 1, "{rec}");
        outcomes.push(winner_is_delete);
    }
    // Both orders resolve by the same rule (greater (hlc, node) wins).
    assert_eq!(outcomes.len(), 2);
}

/// 7. A batch replayed, and batches reordered: the same state as applying once, in order.
#[tokio::test]
async fn replayed_and_reordered_batches_are_idempotent() {
    let n = nodes(&[("src", 71), ("once", 72), ("twice", 73), ("shuffled", 74)]).await;
    let (src, once, twice, shuffled) = (&n[0], &n[1], &n[2], &n[3]);
    src.create_collection("docs", json!({})).await;
    for i in 0..30 {
        src.put_doc("docs", &format!("d{i}"), &format!("v1-{i}"))
            .await;
    }
    for i in 0..30 {
        if i % 3 == 0 {
            src.put_doc("docs", &format!("d{i}"), &format!("v2-{i}"))
                .await;
        }
        if i % 7 == 0 {
            src.delete_doc("docs", &format!("d{i}")).await;
        }
    }
    // The log in pages of 8, as a puller would see it.
    let mut pages = Vec::new();
    let mut since = "0000000000000000".to_string();
    loop {
        let p = src
            .ok("GET", &format!("/sync/changes?since={since}&limit=8"), None)
            .await;
        since = p["watermark"].as_str().unwrap().to_string();
        let more = p["has_more"].as_bool().unwrap();
        pages.push(p);
        if !more {
            break;
        }
    }
    assert!(pages.len() >= 4);
    let push = |p: &serde_json::Value| json!({"changes": p["changes"], "source_watermark": p["watermark"]});
    for p in &pages {
        once.ok("POST", "/sync/changes", Some(push(p))).await;
    }
    for p in pages.iter().chain(pages.iter()) {
        twice.ok("POST", "/sync/changes", Some(push(p))).await;
    }
    // Reordered: last page first, and each page's changes reversed.
    for p in pages.iter().rev() {
        let mut changes = p["changes"].as_array().unwrap().clone();
        changes.reverse();
        shuffled
            .ok(
                "POST",
                "/sync/changes",
                Some(json!({"changes": changes, "source_watermark": p["watermark"]})),
            )
            .await;
    }
    let expected = src.dump().await;
    for node in [once, twice, shuffled] {
        assert_eq!(
            node.dump().await,
            expected,
            "{} differs from the source",
            node.name
        );
    }
    // Replaying onto a node that has it all changes nothing, not even its log head.
    let head = dump_head(twice).await;
    twice
        .ok("POST", "/sync/changes", Some(push(&pages[0])))
        .await;
    assert_eq!(dump_head(twice).await, head);
}

/// 8. A wiped peer (new incarnation, same node id): full resync, nothing missing, including
/// the wiped node's own earlier writes that only its peers still hold.
#[tokio::test]
async fn wiped_peer_gets_full_resync() {
    let a = TestNode::start(
        "a",
        81,
        NodeOptions {
            node_id: Some(0x81),
            ..Default::default()
        },
    )
    .await;
    let mut b = TestNode::start(
        "b",
        82,
        NodeOptions {
            node_id: Some(0x82),
            ..Default::default()
        },
    )
    .await;
    a.create_collection("docs", json!({})).await;
    a.set_round_peers(&[(&b, "both")], 7).await;
    b.set_round_peers(&[(&a, "both")], 7).await;
    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(a.put_doc("docs", &format!("a{i}"), "from a").await);
    }
    sync_until_quiet(&[&a, &b]).await;
    for i in 0..20 {
        acks.push(b.put_doc("docs", &format!("b{i}"), "from b").await);
    }
    sync_until_quiet(&[&a, &b]).await;
    let old_incarnation = b.status().await["incarnation"]
        .as_str()
        .unwrap()
        .to_string();

    b.kill9();
    b.wipe();
    b.restart().await;
    let status = b.status().await;
    assert_ne!(status["incarnation"].as_str().unwrap(), old_incarnation);
    assert_eq!(status["documents"], 0);
    b.set_round_peers(&[(&a, "both")], 7).await;
    sync_until_quiet(&[&a, &b]).await;
    let dump = assert_converged(&[&a, &b]).await;
    assert_acks_survive(&dump, &acks);
    assert_eq!(
        b.documents("docs").await.len(),
        40,
        "b got its own old writes back too"
    );
}

/// 9. A node killed with SIGKILL in the middle of a sync and restarted: no acknowledged
/// write lost, and the sync resumes from the checkpoint saved with the last applied batch.
#[tokio::test]
async fn kill9_mid_sync_resumes_from_checkpoint() {
    let a = TestNode::start("a", 91, NodeOptions::default()).await;
    let mut b = TestNode::start("b", 92, NodeOptions::default()).await;
    a.create_collection("docs", json!({})).await;
    let mut acks = Vec::new();
    let big = "x".repeat(2000);
    for chunk in 0..30 {
        let writes = (0..50).map(|i| {
            let id = format!("d{:05}", chunk * 50 + i);
            let a = &a;
            let big = &big;
            async move { a.put_doc("docs", &id, big).await }
        });
        acks.extend(futures::future::join_all(writes).await);
    }
    b.set_round_peers(&[(&a, "pull")], 20).await;
    b.create_collection("local", json!({})).await;
    let local = b
        .put_doc("local", "mine", "written on b before the crash")
        .await;

    // Start a sync and kill b once it has made durable progress.
    let url = format!("{}/admin/sync", b.url());
    let bg = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .send()
            .await
            .map(|r| r.status())
    });
    let progressed = wait_for("b to apply some pages", WAIT, || async {
        let s = b.status().await;
        let n = s["documents"].as_u64().unwrap_or(0);
        (n >= 100).then_some(n)
    })
    .await;
    b.kill9();
    let _ = bg.await;
    assert!(
        progressed < 1500,
        "the kill landed mid-sync ({progressed} of 1500 applied)"
    );

    b.restart().await;
    // Its status shows checkpoints once it knows the peer's identity again (from its first
    // call to the peer after the restart).
    let s = wait_for("b to know its peer again", WAIT, || async {
        let s = b.status().await;
        (!s["peers"][0]["node_id"].is_null()).then_some(s)
    })
    .await;
    let kept = s["documents"].as_u64().unwrap();
    assert!(
        kept >= progressed,
        "applied batches survived kill -9: {kept} >= {progressed}"
    );
    let cp = s["peers"][0]["checkpoint"].as_str().map(str::to_string);
    assert!(
        cp.is_some(),
        "the checkpoint saved with the applied batches survived: {s}"
    );
    let stats = b.sync().await;
    assert!(errors(&stats).is_empty(), "{stats:?}");
    let pulled = stats[0]["pulled"].as_u64().unwrap();
    assert!(
        pulled as usize <= 1500 + 1 - kept as usize + 20,
        "resumed from the checkpoint: pulled {pulled} after keeping {kept}"
    );
    a.set_round_peers(&[(&b, "pull")], 100).await;
    sync_until_quiet(&[&a, &b]).await;
    let dump = assert_converged(&[&a, &b]).await;
    acks.push(local);
    assert_acks_survive(&dump, &acks);
    assert_eq!(b.documents("docs").await.len(), 1500);
}
