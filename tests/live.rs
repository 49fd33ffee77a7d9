//! Live sync over real HTTP between real `rag-node` processes: the waiting change feed, its
//! limits, and delivery by the per-peer live tasks. Every node is configured with an
//! anti-entropy period of an hour (`set_peers` writes `interval_seconds: 3600`) and no test
//! calls `POST /admin/sync`, so only live delivery can move data after the first round.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::node::{
    assert_acks_survive, assert_converged, converged, wait_for, Ack, NodeOptions, TestNode, WAIT,
};
use tokio::task::JoinHandle;

/// How long a live delivery may take before a test fails. Generous: the latency figures
/// belong to the benchmark; this only tells live delivery from none at all.
const LIVE: Duration = Duration::from_secs(10);

/// What "at once" means for an answer that must not wait out a 25 s wait.
const AT_ONCE: Duration = Duration::from_secs(5);

/// A response to a request a test sent itself, with the time it took.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    watermark: Option<String>,
    has_more: Option<String>,
    elapsed: Duration,
}

impl Answer {
    fn changes(&self) -> &Vec<Value> {
        self.body["changes"]
            .as_array()
            .unwrap_or_else(|| panic!("not a page: {self:?}"))
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let start = Instant::now();
    let resp = request.send().await.expect("send the request");
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let watermark = header("rag-sync-watermark");
    let has_more = header("rag-sync-has-more");
    let text = resp.text().await.expect("read the body");
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        watermark,
        has_more,
        elapsed: start.elapsed(),
    }
}

fn spawn_send(request: reqwest::RequestBuilder) -> JoinHandle<Answer> {
    tokio::spawn(send(request))
}

/// The head of the node's log.
async fn head(n: &TestNode) -> String {
    n.ok("GET", "/sync/watermark", None).await["hlc"]
        .as_str()
        .unwrap()
        .to_string()
}

fn waiting_path(since: &str, wait: &str) -> String {
    format!("/sync/changes?since={since}&wait={wait}")
}

fn assert_too_many_waiting(a: &Answer) {
    assert_eq!(a.status, 429, "{a:?}");
    assert_eq!(a.body["error"], "too_many_waiting", "{a:?}");
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(a.elapsed < AT_ONCE, "a refusal comes at once: {a:?}");
}

/// On a node started with `--max-waiting 1`: sends the same waiting request twice at once.
/// One is held and the other refused, so when this returns the held one is certainly
/// waiting on the node (no sleep guessing when the server got it).
async fn hold_one(n: &TestNode, path: &str) -> JoinHandle<Answer> {
    let both = vec![
        spawn_send(n.request("GET", path)),
        spawn_send(n.request("GET", path)),
    ];
    let (first, _, mut rest) = futures::future::select_all(both).await;
    assert_too_many_waiting(&first.unwrap());
    rest.pop().unwrap()
}

/// How many waiting requests `n` holds now, from its `waiting_requests` gauge.
async fn waiting_requests(n: &TestNode) -> u64 {
    let metrics = n.ok("GET", "/metrics", None).await;
    let text = metrics.as_str().unwrap();
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains("waiting_requests "))
        .unwrap_or_else(|| panic!("no waiting_requests gauge on {}:\n{text}", n.name));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Waits until `n` holds `count` waiting requests (a live puller's wait has reached it).
async fn wait_waiting(n: &TestNode, count: u64) {
    let what = format!("{} to hold {count} waiting requests", n.name);
    wait_for(&what, LIVE, || async {
        (waiting_requests(n).await == count).then_some(())
    })
    .await
}

async fn start(name: &str, octet: u8, extra_args: &[&str]) -> TestNode {
    let opts = NodeOptions {
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    TestNode::start(name, octet, opts).await
}

async fn nodes(names: &[(&str, u8)]) -> Vec<TestNode> {
    let mut out = Vec::new();
    for (name, octet) in names {
        out.push(start(name, *octet, &[]).await);
    }
    out
}

/// Every node pulls from every other one; returns once each node's first round (the one a
/// configuration change starts) has tried every peer, so writes made next are left to live
/// delivery.
async fn pull_mesh(nodes: &[&TestNode]) {
    for n in nodes {
        let others: Vec<(&TestNode, &str)> = nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| (*o, "pull"))
            .collect();
        n.set_peers(&others, 100).await;
    }
    for n in nodes {
        n.wait_first_round().await;
    }
}

/// Waits until `n` holds document `id` with `content` (`None`: until it is absent).
async fn wait_doc(
    n: &TestNode,
    collection: &str,
    id: &str,
    content: Option<&str>,
    within: Duration,
) {
    let path = format!("/collections/{collection}/documents/{id}");
    let what = format!("{collection}/{id} = {content:?} on {}", n.name);
    wait_for(&what, within, || async {
        let (status, body) = n.call("GET", &path, None).await;
        let arrived = match content {
            Some(c) => status == 200 && body["content"] == c,
            None => status == 404,
        };
        arrived.then_some(())
    })
    .await
}

/// Waits until every node holds identical data with `documents` live documents in `docs`.
async fn wait_converged(nodes: &[&TestNode], documents: usize, within: Duration) {
    wait_for("every node to hold the same data", within, || async {
        for n in nodes {
            if n.documents("docs").await.len() != documents {
                return None;
            }
        }
        converged(nodes).await.map(|_| ())
    })
    .await
}

/// 1. A write on one node reaches the others with no sync call and no timer, in a mesh of
/// pull edges; so do a write from another node and a delete. The receiving node records the
/// delivery latency per peer.
#[tokio::test]
async fn write_is_delivered_live_in_a_pull_mesh() {
    let n = nodes(&[("a", 151), ("b", 152), ("c", 153)]).await;
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    a.create_collection("docs", json!({})).await;
    pull_mesh(&[a, b, c]).await;

    a.put_doc("docs", "d1", "written on a").await;
    wait_doc(b, "docs", "d1", Some("written on a"), LIVE).await;
    wait_doc(c, "docs", "d1", Some("written on a"), LIVE).await;

    b.put_doc("docs", "d2", "written on b").await;
    wait_doc(a, "docs", "d2", Some("written on b"), LIVE).await;
    wait_doc(c, "docs", "d2", Some("written on b"), LIVE).await;

    c.delete_doc("docs", "d1").await;
    wait_doc(a, "docs", "d1", None, LIVE).await;
    wait_doc(b, "docs", "d1", None, LIVE).await;

    wait_converged(&[a, b, c], 1, LIVE).await;
    let metrics = b.ok("GET", "/metrics", None).await;
    let text = metrics.as_str().unwrap();
    let count = text
        .lines()
        .find(|l| l.contains("delivery_latency_seconds_count{") && l.contains("peer=\"a\""))
        .unwrap_or_else(|| panic!("no delivery latency histogram for peer a:\n{text}"));
    let delivered: f64 = count.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(delivered >= 1.0, "{count}");
}

/// 1b. A push edge pushes on commit: the receiver has no peers at all.
#[tokio::test]
async fn write_is_pushed_live_on_a_push_edge() {
    let n = nodes(&[("a", 155), ("b", 156)]).await;
    let (a, b) = (&n[0], &n[1]);
    a.create_collection("docs", json!({})).await;
    a.set_peers(&[(b, "push")], 100).await;
    a.wait_first_round().await;
    for i in 0..3 {
        a.put_doc("docs", &format!("d{i}"), "pushed").await;
        wait_doc(b, "docs", &format!("d{i}"), Some("pushed"), LIVE).await;
    }
    assert!(b.status().await["peers"].as_array().unwrap().is_empty());
}

/// 2. A waiting request on a node with nothing new ends, at its deadline and not before, with
/// an empty page and the same watermark; a commit its filter does not admit does not end it.
#[tokio::test]
async fn waiting_request_with_nothing_new_ends_empty_at_its_deadline() {
    let a = start("a", 161, &[]).await;
    a.create_collection("docs", json!({})).await;
    a.put_doc("docs", "d1", "already there").await;
    let h = head(&a).await;

    let r = send(a.request("GET", &waiting_path(&h, "300ms"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.elapsed >= Duration::from_millis(250),
        "held for the wait: {r:?}"
    );
    assert!(r.elapsed < AT_ONCE, "not much longer than the wait: {r:?}");
    assert!(r.changes().is_empty(), "{r:?}");
    assert_eq!(r.body["watermark"], h.as_str(), "{r:?}");
    assert_eq!(r.body["has_more"], false, "{r:?}");
    assert_eq!(r.watermark.as_deref(), Some(h.as_str()), "{r:?}");
    assert_eq!(r.has_more.as_deref(), Some("false"), "{r:?}");

    // Writes outside the filter, during (or just before) the wait.
    let held = spawn_send(a.request(
        "GET",
        &format!("{}&collections=docs", waiting_path(&h, "1500ms")),
    ));
    a.create_collection("notes", json!({})).await;
    a.put_doc("notes", "n1", "not for this feed").await;
    let after = head(&a).await;
    let r = held.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.elapsed >= Duration::from_millis(1400),
        "a filtered-out commit does not end the wait: {r:?}"
    );
    assert!(r.changes().is_empty(), "{r:?}");
    let w = r.body["watermark"].as_str().unwrap();
    assert!(
        w >= h.as_str() && w <= after.as_str(),
        "watermark {w} is a head the node read, between {h} and {after}"
    );
    assert_eq!(r.body["has_more"], false, "{r:?}");
}

/// 3. A waiting request is answered as soon as a write lands, with that write.
#[tokio::test]
async fn waiting_request_is_answered_when_a_write_lands() {
    let a = start("a", 165, &["--max-waiting", "1"]).await;
    a.create_collection("docs", json!({})).await;
    let h = head(&a).await;
    let held = hold_one(&a, &waiting_path(&h, "25s")).await;
    let written = Instant::now();
    let ack = a.put_doc("docs", "d1", "wakes the feed").await;
    let r = held.await.unwrap();
    let waited = written.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        waited < AT_ONCE,
        "answered {waited:?} after the write: {r:?}"
    );
    let changes = r.changes();
    assert_eq!(changes.len(), 1, "{r:?}");
    assert_eq!(changes[0]["document"]["id"], "d1", "{r:?}");
    assert_eq!(changes[0]["document"]["content"], "wakes the feed", "{r:?}");
    assert_eq!(changes[0]["version"]["hlc"], ack.hlc.as_str(), "{r:?}");
    let w = r.body["watermark"].as_str().unwrap();
    assert!(w > h.as_str(), "the watermark moved past the write: {r:?}");
    assert_eq!(r.watermark.as_deref(), Some(w), "{r:?}");
}

/// A commit of changes written only by a node the wait names `quiet` does not end it; the
/// next commit it wants does, and the page holds both (the quiet one first). A live puller
/// names the peers it receives from directly, so that a mesh delivers each write once per
/// node instead of once per relaying peer.
#[tokio::test]
async fn quiet_writers_do_not_end_a_wait() {
    let a = start("a", 167, &[]).await;
    let b = start("b", 168, &["--max-waiting", "1"]).await;
    a.create_collection("docs", json!({})).await;
    a.put_doc("docs", "first", "before the wait").await;
    b.set_peers(&[(&a, "pull")], 100).await;
    wait_doc(&b, "docs", "first", Some("before the wait"), LIVE).await;

    let a_id = a.ok("GET", "/sync/watermark", None).await["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let h = head(&b).await;
    let path = format!("{}&quiet={a_id}", waiting_path(&h, "25s"));
    let held = hold_one(&b, &path).await;
    a.put_doc("docs", "relayed", "written on a").await;
    wait_doc(&b, "docs", "relayed", Some("written on a"), LIVE).await;
    let own = b.put_doc("docs", "own", "written on b").await;
    let r = held.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let ids: Vec<&str> = r
        .changes()
        .iter()
        .map(|c| c["document"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["relayed", "own"],
        "a's commit did not end the wait: {r:?}"
    );
    assert_eq!(r.changes()[1]["version"]["hlc"], own.hlc.as_str(), "{r:?}");

    let (status, body) = b
        .call("GET", &format!("{}&quiet=zz", waiting_path(&h, "1s")), None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("quiet:"),
        "{body}"
    );
}

/// 4. The source is killed with `kill -9` while the puller waits on it, then restarted on the
/// same data directory and port: the puller reconnects by itself and gets every write, those
/// made before the kill and those made after the restart.
#[tokio::test]
async fn puller_reconnects_to_a_source_restarted_after_kill9() {
    let mut a = start("a", 171, &[]).await;
    let b = start("b", 172, &[]).await;
    a.create_collection("docs", json!({})).await;
    b.set_peers(&[(&a, "pull")], 100).await;
    b.wait_first_round().await;
    let mut acks: Vec<Ack> = Vec::new();
    acks.push(a.put_doc("docs", "before-0", "before the kill").await);
    wait_doc(&b, "docs", "before-0", Some("before the kill"), LIVE).await;
    // b's live task is back to waiting on a.
    wait_waiting(&a, 1).await;
    // Acknowledged writes whose delivery races the kill.
    for i in 1..5 {
        acks.push(
            a.put_doc("docs", &format!("before-{i}"), "before the kill")
                .await,
        );
    }
    a.kill9();
    a.restart().await;
    for i in 0..5 {
        acks.push(
            a.put_doc("docs", &format!("after-{i}"), "after the restart")
                .await,
        );
    }
    for i in 0..5 {
        wait_doc(
            &b,
            "docs",
            &format!("before-{i}"),
            Some("before the kill"),
            WAIT,
        )
        .await;
        wait_doc(
            &b,
            "docs",
            &format!("after-{i}"),
            Some("after the restart"),
            WAIT,
        )
        .await;
    }
    // And it stays live after the reconnect.
    acks.push(a.put_doc("docs", "later", "once reconnected").await);
    wait_doc(&b, "docs", "later", Some("once reconnected"), LIVE).await;
    let dump = assert_converged(&[&a, &b]).await;
    assert_acks_survive(&dump, &acks);
}

/// 5. A node cut off during live delivery, writes on both sides, peers restored: it heals by
/// itself with every acknowledged write present everywhere or recorded as a conflict.
#[tokio::test]
async fn partition_during_live_delivery_heals_with_nothing_lost() {
    let n = nodes(&[("a", 181), ("b", 182), ("c", 183)]).await;
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    let mut acks: Vec<Ack> = Vec::new();
    a.create_collection("docs", json!({})).await;
    pull_mesh(&[a, b, c]).await;
    for i in 0..5 {
        acks.push(a.put_doc("docs", &format!("base-{i}"), "base").await);
    }
    wait_converged(&[a, b, c], 5, LIVE).await;

    // Partition {a} | {b, c}: a's peers point at a dead address, as a cut link would, and
    // b and c no longer list a.
    let dead = support::node::free_port("127.0.0.181");
    let dead_url = format!("http://127.0.0.181:{dead}");
    a.ok(
        "PUT",
        "/admin/config",
        Some(json!({"peers": [
            {"peer_id": "b", "endpoint": dead_url, "direction": "pull"},
            {"peer_id": "c", "endpoint": dead_url, "direction": "pull"}],
            "interval_seconds": 3600, "batch_size": 100})),
    )
    .await;
    b.set_peers(&[(c, "pull")], 100).await;
    c.set_peers(&[(b, "pull")], 100).await;

    // c edits base-1 first, a after it: concurrent only if the partition holds.
    acks.push(c.put_doc("docs", "base-1", "c's edit while split").await);
    for i in 0..10 {
        acks.push(
            b.put_doc("docs", &format!("b-{i}"), "from b while split")
                .await,
        );
    }
    acks.push(b.delete_doc("docs", "base-2").await);
    for i in 0..10 {
        acks.push(
            a.put_doc("docs", &format!("a-{i}"), "from a while split")
                .await,
        );
    }
    acks.push(a.put_doc("docs", "base-1", "a's edit while split").await);
    // Live delivery goes on within the majority side.
    wait_doc(c, "docs", "b-9", Some("from b while split"), LIVE).await;
    wait_doc(c, "docs", "base-2", None, LIVE).await;
    let (status, _) = a.call("GET", "/collections/docs/documents/b-0", None).await;
    assert_eq!(status, 404, "nothing crosses the partition");

    // Heal.
    pull_mesh(&[a, b, c]).await;
    wait_converged(&[a, b, c], 5 - 1 + 10 + 10, WAIT).await;
    let dump = assert_converged(&[a, b, c]).await;
    assert_acks_survive(&dump, &acks);
    for node in [a, b, c] {
        let cs = node
            .ok("GET", "/collections/docs/documents/base-1/conflicts", None)
            .await;
        assert_eq!(
            cs["conflicts"].as_array().unwrap().len(),
            1,
            "the two edits of base-1 on {} are a conflict: {cs}",
            node.name
        );
    }
}

/// 6. Relay through a hub: spokes pull only from the hub, the hub pulls from every spoke. A
/// write on one spoke reaches the others in two live hops, with no timer on the path.
#[tokio::test]
async fn relay_through_a_hub_is_live() {
    let n = nodes(&[("hub", 191), ("s1", 192), ("s2", 193), ("s3", 194)]).await;
    let (hub, spokes) = (&n[0], &n[1..]);
    hub.create_collection("docs", json!({})).await;
    let edges: Vec<(&TestNode, &str)> = spokes.iter().map(|s| (s, "pull")).collect();
    hub.set_peers(&edges, 100).await;
    for s in spokes {
        s.set_peers(&[(hub, "pull")], 100).await;
    }
    for node in &n {
        node.wait_first_round().await;
    }

    spokes[0].put_doc("docs", "from-s1", "relayed").await;
    for s in &spokes[1..] {
        wait_doc(s, "docs", "from-s1", Some("relayed"), LIVE).await;
    }
    spokes[2].put_doc("docs", "from-s3", "relayed back").await;
    for s in &spokes[..2] {
        wait_doc(s, "docs", "from-s3", Some("relayed back"), LIVE).await;
    }
    hub.put_doc("docs", "from-hub", "one hop").await;
    for s in spokes {
        wait_doc(s, "docs", "from-hub", Some("one hop"), LIVE).await;
    }
    let all: Vec<&TestNode> = n.iter().collect();
    wait_converged(&all, 3, LIVE).await;
}

/// 7. Concurrent writes on every node of a mesh, some to the same documents, converge by live
/// delivery alone: identical data everywhere and no acknowledged write lost.
#[tokio::test]
async fn concurrent_writes_on_every_node_converge() {
    let n = nodes(&[("a", 201), ("b", 202), ("c", 203)]).await;
    let all: Vec<&TestNode> = n.iter().collect();
    n[0].create_collection("docs", json!({})).await;
    pull_mesh(&all).await;
    let writers = all.iter().map(|node| async move {
        let mut acks = Vec::new();
        for i in 0..20 {
            let own = format!("{}-{i}", node.name);
            acks.push(node.put_doc("docs", &own, "own").await);
            if i % 4 == 0 {
                let shared = format!("shared-{}", i / 4);
                acks.push(node.put_doc("docs", &shared, &node.name).await);
            }
        }
        acks.push(node.delete_doc("docs", &format!("{}-0", node.name)).await);
        acks
    });
    let acks: Vec<Ack> = futures::future::join_all(writers)
        .await
        .into_iter()
        .flatten()
        .collect();
    wait_converged(&all, 3 * 19 + 5, WAIT).await;
    let dump = assert_converged(&all).await;
    assert_acks_survive(&dump, &acks);
}

/// 8. Waiting requests need the token like any other request, and live delivery between
/// nodes with a token works (the live puller sends it).
#[tokio::test]
async fn waiting_requests_require_the_token() {
    let token = NodeOptions {
        token: Some("live-secret".into()),
        ..Default::default()
    };
    let a = TestNode::start("a", 211, token.clone()).await;
    let b = TestNode::start("b", 212, token).await;
    a.create_collection("docs", json!({})).await;
    let h = head(&a).await;
    let path = waiting_path(&h, "25s");

    let r = send(a.request_without_token("GET", &path)).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body["error"], "unauthorized", "{r:?}");
    assert!(
        r.elapsed < AT_ONCE,
        "refused at once, not after the wait: {r:?}"
    );
    let r = send(a.request_without_token("GET", &path).bearer_auth("wrong")).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.elapsed < AT_ONCE, "{r:?}");

    let r = send(a.request("GET", &waiting_path(&h, "300ms"))).await;
    assert_eq!(r.status, 200, "with the token: {r:?}");
    assert!(r.changes().is_empty(), "{r:?}");

    b.set_peers(&[(&a, "pull")], 100).await;
    b.wait_first_round().await;
    a.put_doc("docs", "d1", "behind a token").await;
    wait_doc(&b, "docs", "d1", Some("behind a token"), LIVE).await;
    let peer = &b.status().await["peers"][0];
    assert!(peer["last_error"].is_null(), "{peer}");
}

/// 9. A node holds at most `--max-waiting` waiting requests and refuses more with 429 at
/// once; requests without `wait` are not limited; a malformed `wait` is a 400 naming it.
#[tokio::test]
async fn waiting_request_limit_answers_429() {
    let a = start("a", 221, &["--max-waiting", "2"]).await;
    a.create_collection("docs", json!({})).await;
    let h = head(&a).await;
    let path = waiting_path(&h, "25s");

    let three: Vec<_> = (0..3)
        .map(|_| spawn_send(a.request("GET", &path)))
        .collect();
    let (first, _, held) = futures::future::select_all(three).await;
    assert_too_many_waiting(&first.unwrap());
    assert!(held.iter().all(|h| !h.is_finished()), "two are held");
    assert_eq!(waiting_requests(&a).await, 2);
    // Two are held now, so a fourth is refused for certain.
    assert_too_many_waiting(&send(a.request("GET", &path)).await);
    // A request without `wait` is answered as always.
    let r = send(a.request("GET", &format!("/sync/changes?since={h}"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.changes().is_empty(), "{r:?}");

    let ack = a.put_doc("docs", "d1", "releases both").await;
    for h in held {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.changes().len(), 1, "{r:?}");
        assert_eq!(r.changes()[0]["version"]["hlc"], ack.hlc.as_str(), "{r:?}");
    }
    // Their places are free again.
    let h = head(&a).await;
    let r = send(a.request("GET", &waiting_path(&h, "300ms"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.elapsed >= Duration::from_millis(250), "{r:?}");

    for bad in ["abc", "5", "1.5s", "-1s", "10m", "25 s"] {
        let r = send(a.request("GET", &waiting_path(&h, bad))).await;
        assert_eq!(r.status, 400, "wait={bad}: {r:?}");
        assert_eq!(r.body["error"], "bad_request", "wait={bad}: {r:?}");
        assert!(
            r.body["message"].as_str().unwrap().contains("wait"),
            "the message names the parameter: {r:?}"
        );
    }
}

/// 10. SIGTERM while a waiting request is held: the held request gets its empty page and
/// the node exits promptly, well before the wait would end.
#[tokio::test]
async fn sigterm_ends_waiting_requests_promptly() {
    let mut a = start("a", 231, &["--max-waiting", "1"]).await;
    a.create_collection("docs", json!({})).await;
    let h = head(&a).await;
    let held = hold_one(&a, &waiting_path(&h, "25s")).await;
    let t = Instant::now();
    a.sigterm();
    let exit = a.wait_exit(AT_ONCE).await;
    let exit = exit.unwrap_or_else(|| panic!("still running {:?} after SIGTERM", t.elapsed()));
    assert!(exit.success(), "clean exit: {exit}\n{}", a.log_text());
    let r = tokio::time::timeout(AT_ONCE, held)
        .await
        .expect("the held request is answered")
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.changes().is_empty(), "{r:?}");
    assert_eq!(r.body["watermark"], h.as_str(), "{r:?}");
}

/// 10b. SIGTERM on a node whose live task is waiting on its peer: it exits promptly.
#[tokio::test]
async fn sigterm_stops_a_live_puller_promptly() {
    let a = start("a", 235, &[]).await;
    let mut b = start("b", 236, &[]).await;
    a.create_collection("docs", json!({})).await;
    b.set_peers(&[(&a, "pull")], 100).await;
    b.wait_first_round().await;
    a.put_doc("docs", "d1", "delivered").await;
    wait_doc(&b, "docs", "d1", Some("delivered"), LIVE).await;
    // b's live task is back to waiting on a.
    wait_waiting(&a, 1).await;
    let t = Instant::now();
    b.sigterm();
    let exit = b.wait_exit(AT_ONCE).await;
    let exit = exit.unwrap_or_else(|| panic!("still running {:?} after SIGTERM", t.elapsed()));
    assert!(exit.success(), "clean exit: {exit}\n{}", b.log_text());
}

/// The source's status answers each receiver's lag: a puller's position (the `since` of its
/// latest pull) with what lies after it, and for a push peer the push backlog; both grow
/// while the receivers are down and drop back to nothing once they are delivered to. The
/// status also carries the digest of the node's config.
#[tokio::test]
async fn a_source_reports_what_each_receiver_still_lacks() {
    let mut n = nodes(&[("a", 241), ("b", 242), ("c", 243)]).await;
    n[0].create_collection("docs", json!({})).await;
    n[1].set_peers(&[(&n[0], "pull")], 100).await;
    n[0].set_peers(&[(&n[2], "push")], 100).await;
    n[1].wait_first_round().await;
    n[0].wait_first_round().await;
    let b_id = n[1].status().await["node_id"].clone();

    // What `a` says about `b` (as a puller) and `c` (as a push peer): pending counts.
    async fn lacks(a: &TestNode, b_id: &Value) -> (Option<u64>, Option<u64>) {
        let s = a.status().await;
        let puller = s["pullers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| &p["node_id"] == b_id)
            .map(|p| p["backlog"]["pending"].as_u64().unwrap());
        let pushed = s["peers"][0]["push_backlog"]["pending"].as_u64();
        (puller, pushed)
    }
    async fn wait_lacks(a: &TestNode, b_id: &Value, want: (u64, u64)) {
        let what = format!("a to report {want:?} pending for (b, c)");
        wait_for(&what, LIVE, || async {
            (lacks(a, b_id).await == (Some(want.0), Some(want.1))).then_some(())
        })
        .await
    }

    n[0].put_doc("docs", "d1", "one").await;
    wait_doc(&n[1], "docs", "d1", Some("one"), LIVE).await;
    wait_doc(&n[2], "docs", "d1", Some("one"), LIVE).await;
    wait_lacks(&n[0], &b_id, (0, 0)).await;

    n[1].kill9();
    n[2].kill9();
    n[0].put_doc("docs", "d2", "two").await;
    n[0].put_doc("docs", "d3", "three").await;
    wait_lacks(&n[0], &b_id, (2, 2)).await;
    let s = n[0].status().await;
    let oldest = &s["pullers"][0]["backlog"]["oldest"];
    assert!(oldest.is_string(), "the oldest pending entry is named: {s}");
    assert!(oldest.as_str() <= s["watermark"].as_str(), "{s}");

    n[1].restart().await;
    n[2].restart().await;
    wait_doc(&n[1], "docs", "d3", Some("three"), LIVE).await;
    // The push peer catches up at the next push (the live pusher retries with backoff).
    wait_doc(&n[2], "docs", "d3", Some("three"), LIVE).await;
    wait_lacks(&n[0], &b_id, (0, 0)).await;

    // The digest is the config's as `GET /admin/config` gives it, and follows a new config.
    let digest = |s: &Value| s["config_digest"].as_str().unwrap().to_string();
    let cfg: rag_sync::config::SyncConfig =
        serde_json::from_value(n[0].ok("GET", "/admin/config", None).await).unwrap();
    let before = digest(&n[0].status().await);
    assert_eq!(before, cfg.digest());
    n[0].set_peers(&[], 100).await;
    assert_ne!(digest(&n[0].status().await), before);
}

/// A relay's status shows a puller caught up as soon as it is: `c` pulls from `a` and from
/// `b`, which relays `a`. `c`'s first pull from `b` starts at zero, where a pull names no
/// puller (it may be a wiped node that needs its own writes back); such a wait must end at
/// `b`'s first commit, or `b` could not report `c` (and the operator would count the edge as
/// lagging) until the wait's deadline, 25 s later.
#[tokio::test]
async fn a_relay_reports_a_puller_from_zero_caught_up_at_once() {
    let [a, b, c]: [TestNode; 3] = nodes(&[("a", 171), ("b", 172), ("c", 173)])
        .await
        .try_into()
        .unwrap_or_else(|_| unreachable!());
    b.set_peers(&[(&a, "pull")], 100).await;
    c.set_peers(&[(&a, "pull"), (&b, "pull")], 100).await;
    b.wait_first_round().await;
    c.wait_first_round().await;
    let c_id = c.ok("GET", "/sync/watermark", None).await["node_id"]
        .as_str()
        .unwrap()
        .to_string();

    a.create_collection("docs", json!({})).await;
    a.put_doc("docs", "one", "written on a").await;
    wait_doc(&b, "docs", "one", Some("written on a"), LIVE).await;
    wait_doc(&c, "docs", "one", Some("written on a"), LIVE).await;
    wait_for(
        "b to report c as a puller with nothing pending",
        LIVE,
        || async {
            let status = b.status().await;
            status["pullers"]
                .as_array()?
                .iter()
                .any(|p| p["node_id"] == c_id.as_str() && p["backlog"]["pending"] == 0)
                .then_some(())
        },
    )
    .await;
}
