//! The HTTP contract of a real `rag-node`: bad input gets a clear 4xx and changes nothing,
//! tokens are enforced, 2xx writes are durable, SIGTERM shuts down cleanly, embeddings of
//! different models never mix, and partial sync resyncs an added collection.

mod support;

use serde_json::{json, Value};
use support::node::{assert_converged, NodeOptions, TestNode};

/// Everything a client can observe of a node's data.
async fn snapshot(n: &TestNode) -> (Value, Value) {
    let wm = n.ok("GET", "/sync/watermark", None).await;
    let changes = n
        .ok(
            "GET",
            "/sync/changes?since=0000000000000000&limit=10000",
            None,
        )
        .await;
    (wm, changes)
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_and_changes_nothing() {
    let n = TestNode::start("bad", 101, NodeOptions::default()).await;
    n.create_collection(
        "docs",
        json!({"embedding": {"model": "m1", "dimensions": 3}}),
    )
    .await;
    n.ok(
        "PUT",
        "/collections/docs/documents/d1",
        Some(json!({"content": "hello", "embedding": [0.1, 0.2, 0.3]})),
    )
    .await;
    let before = snapshot(&n).await;

    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        (
            "GET",
            "/sync/changes?since=xyz".into(),
            None,
            400,
            "not an HLC",
        ),
        (
            "GET",
            "/sync/changes?since=00000000000000000".into(),
            None,
            400,
            "not an HLC",
        ),
        (
            "GET",
            "/sync/changes?since=ABCDEF0000000000".into(),
            None,
            400,
            "lowercase",
        ),
        ("GET", "/sync/changes?limit=0".into(), None, 400, "limit"),
        ("GET", "/sync/changes?limit=-5".into(), None, 400, "limit"),
        ("GET", "/sync/changes?limit=many".into(), None, 400, "limit"),
        (
            "GET",
            "/sync/changes?collections=a/b".into(),
            None,
            400,
            "collection name",
        ),
        (
            "GET",
            "/sync/changes?exclude_origin=zz".into(),
            None,
            400,
            "node id",
        ),
        ("GET", "/sync/changes?bogus=1".into(), None, 400, "bogus"),
        (
            "GET",
            "/admin/backlog?since=nothex".into(),
            None,
            400,
            "not an HLC",
        ),
        (
            "PUT",
            "/collections/docs/documents/d2".into(),
            Some(json!({"metadata": {}})),
            400,
            "content",
        ),
        (
            "PUT",
            "/collections/docs/documents/d2".into(),
            Some(json!({"content": "x", "metadata": [1]})),
            400,
            "metadata",
        ),
        (
            "PUT",
            "/collections/docs/documents/d2".into(),
            Some(json!({"content": "x", "embedding": [1.0]})),
            400,
            "dimension",
        ),
        (
            "PUT",
            "/collections/docs/documents/d2".into(),
            Some(json!({"content": "x", "extra": 1})),
            400,
            "unknown field",
        ),
        (
            "PUT",
            "/collections/nope/documents/d2".into(),
            Some(json!({"content": "x"})),
            404,
            "collection 'nope' does not exist",
        ),
        (
            "GET",
            "/collections/docs/documents/missing".into(),
            None,
            404,
            "does not exist",
        ),
        (
            "DELETE",
            "/collections/docs/documents/missing".into(),
            None,
            404,
            "does not exist",
        ),
        (
            "GET",
            "/collections/nope".into(),
            None,
            404,
            "does not exist",
        ),
        (
            "DELETE",
            "/collections/nope".into(),
            None,
            404,
            "does not exist",
        ),
        (
            "PUT",
            "/collections/.bad".into(),
            Some(json!({})),
            400,
            "collection name",
        ),
        (
            "PUT",
            "/collections/c2".into(),
            Some(json!({"settings": {"search": {"hybrid_alpha": 3}}})),
            400,
            "hybrid_alpha",
        ),
        (
            "PUT",
            "/admin/config".into(),
            Some(json!({"batch_size": 0})),
            400,
            "batch_size",
        ),
        (
            "PUT",
            "/admin/config".into(),
            Some(json!({"peers": [{"peer_id": "p", "endpoint": "ftp://x"}]})),
            400,
            "endpoint",
        ),
        (
            "PUT",
            "/admin/config".into(),
            Some(json!({"conflict_strategy": "Whatever"})),
            400,
            "conflict_strategy",
        ),
        (
            "PUT",
            "/admin/config".into(),
            Some(json!({"gc_horizon": "12"})),
            400,
            "HLC",
        ),
        (
            "POST",
            "/admin/sync?peer=ghost".into(),
            None,
            404,
            "no peer 'ghost'",
        ),
        (
            "POST",
            "/sync/changes".into(),
            Some(json!({"changes": "no"})),
            400,
            "changes",
        ),
        (
            "POST",
            "/sync/changes".into(),
            Some(
                json!({"changes": [{"op": "DocumentDelete"}], "source_watermark": "0000000000000000"}),
            ),
            400,
            "invalid JSON",
        ),
        ("GET", "/no/such/route".into(), None, 404, "no route"),
    ];
    for (method, path, body, want, needle) in cases {
        let (status, json) = n.call(method, &path, body).await;
        assert_eq!(status, want, "{method} {path}: {json}");
        let msg = json["message"].as_str().unwrap_or_default();
        assert!(
            json["error"].is_string(),
            "{method} {path}: JSON error body: {json}"
        );
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "{method} {path}: message {msg:?} should mention {needle:?}"
        );
    }
    // A body over the limit is refused from its Content-Length, before it is read.
    let (status, body) =
        oversized_put(&n, "/collections/docs/documents/big", 9 * 1024 * 1024).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("body_too_large") && body.contains("larger"),
        "{body}"
    );
    // A body that is not JSON at all.
    let resp = reqwest::Client::new()
        .put(format!("{}/collections/docs/documents/d3", n.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Pushes of the node's own log, altered by `alter`.
    let node = &n;
    let push_altered = |alter: fn(&mut Value)| async move {
        let mut page = node
            .ok("GET", "/sync/changes?since=0000000000000000&limit=10", None)
            .await;
        alter(&mut page);
        node.call(
            "POST",
            "/sync/changes",
            Some(json!({"changes": page["changes"], "source_watermark": page["watermark"]})),
        )
        .await
    };
    // A pushed change from a clock far ahead is refused whole.
    let (status, body) = push_altered(|page| {
        let future = format!("{:016x}", 0x7fff_0000_0000_0000u64);
        page["changes"][1]["version"]["hlc"] = json!(future);
        let node = page["changes"][1]["version"]["node"].clone();
        page["changes"][1]["version"]["vv"] = json!({ node.as_str().unwrap(): future });
    })
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("clock_drift")),
        "{body}"
    );

    // A pushed document whose metadata is not an object is refused whole, naming it.
    let (status, body) = push_altered(|page| {
        let doc = page["changes"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["document"].is_object())
            .expect("a document change");
        doc["document"]["metadata"] = json!(["not", "an", "object"]);
    })
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("metadata must be a JSON object"),
        "{body}"
    );

    assert_eq!(snapshot(&n).await, before, "bad input changed nothing");
    // Nothing above made the node fail: it still serves.
    n.ok("GET", "/healthz", None).await;
}

/// Sends only the headers of a request announcing `len` bytes, and reads the answer: a
/// server that checks the length first answers without waiting for the body.
async fn oversized_put(n: &TestNode, path: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(n.addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        n.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Read until the whole answer (headers and the Content-Length of body) is in.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let text = loop {
        let n = tokio::time::timeout(support::node::WAIT, s.read(&mut buf))
            .await
            .expect("the server answers before the body is sent")
            .unwrap();
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let want = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= want || n == 0 {
                break text;
            }
        }
        assert!(n > 0, "connection closed early: {text}");
    };
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn token_is_required_when_configured() {
    let n = TestNode::start(
        "secure",
        102,
        NodeOptions {
            token: Some("s3cret-token".into()),
            ..Default::default()
        },
    )
    .await;
    n.create_collection("docs", json!({})).await;
    let before = snapshot(&n).await;
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/sync/watermark"),
        ("GET", "/sync/changes"),
        ("POST", "/sync/changes"),
        ("GET", "/admin/config"),
        ("PUT", "/admin/config"),
        ("POST", "/admin/sync"),
        ("GET", "/admin/status"),
        ("GET", "/metrics"),
        ("PUT", "/collections/docs/documents/x"),
        ("DELETE", "/collections/docs"),
    ] {
        for auth in [None, Some("Bearer wrong"), Some("s3cret-token")] {
            let mut r = http
                .request(method.parse().unwrap(), format!("{}{path}", n.url()))
                .header("content-type", "application/json")
                .body(r#"{"content": "sneaky", "peers": []}"#);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
        // The header `kubectl ragsync` uses through the API server's pod proxy: a wrong
        // value is refused the same way, and says which header was wrong.
        let resp = http
            .request(method.parse().unwrap(), format!("{}{path}", n.url()))
            .header("content-type", "application/json")
            .header("x-ragsync-token", "wrong")
            .body(r#"{"content": "sneaky", "peers": []}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            401,
            "{method} {path} with a wrong X-RagSync-Token"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("X-RagSync-Token"),
            "{body}"
        );
    }
    // The right token in X-RagSync-Token opens the node as the bearer token does.
    for header in ["authorization", "x-ragsync-token"] {
        let value = if header == "authorization" {
            "Bearer s3cret-token"
        } else {
            "s3cret-token"
        };
        let resp = http
            .get(format!("{}/admin/status", n.url()))
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET /admin/status with {header}");
        let status: Value = resp.json().await.unwrap();
        assert!(status["node_id"].is_string(), "{status}");
    }
    // Probes stay open for the kubelet.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http.get(format!("{}{path}", n.url()))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        snapshot(&n).await,
        before,
        "rejected requests changed nothing"
    );

    // Two nodes sharing the token sync; a node with the wrong token is refused.
    let peer = TestNode::start(
        "secure-peer",
        103,
        NodeOptions {
            token: Some("s3cret-token".into()),
            ..Default::default()
        },
    )
    .await;
    let intruder = TestNode::start(
        "intruder",
        104,
        NodeOptions {
            token: Some("other-token".into()),
            ..Default::default()
        },
    )
    .await;
    n.put_doc("docs", "d", "secret data").await;
    peer.set_peers(&[(&n, "pull")], 10).await;
    let stats = peer.sync().await;
    assert!(stats[0]["error"].is_null(), "{stats:?}");
    assert_eq!(peer.documents("docs").await.len(), 1);
    intruder.set_peers(&[(&n, "pull")], 10).await;
    let stats = intruder.sync().await;
    assert!(
        stats[0]["error"].as_str().unwrap().contains("401"),
        "{stats:?}"
    );
}

#[tokio::test]
async fn acknowledged_writes_survive_kill9_and_sigterm_is_clean() {
    let mut n = TestNode::start("durable", 105, NodeOptions::default()).await;
    n.create_collection("docs", json!({})).await;
    let mut acks = Vec::new();
    for i in 0..200 {
        acks.push(
            n.put_doc("docs", &format!("d{i}"), &format!("content {i}"))
                .await,
        );
    }
    n.delete_doc("docs", "d7").await;
    n.ok(
        "PUT",
        "/admin/config",
        Some(json!({"interval_seconds": 5, "batch_size": 10})),
    )
    .await;
    let before = snapshot(&n).await;
    n.kill9();
    n.restart().await;
    assert_eq!(
        snapshot(&n).await,
        before,
        "every 2xx write survived kill -9"
    );
    let cfg = n.ok("GET", "/admin/config", None).await;
    assert_eq!(
        cfg["batch_size"], 10,
        "the applied config survives a restart"
    );
    // New writes keep strictly increasing cursors after the restart.
    let ack = n.put_doc("docs", "after", "after restart").await;
    assert!(ack.hlc.as_str() > before.0["hlc"].as_str().unwrap());

    let status = n.terminate();
    assert!(status.success(), "SIGTERM gives a clean exit: {status:?}");
    assert!(n.log_text().contains("rag-node stopped"));
}

#[tokio::test]
async fn different_embedding_models_never_mix() {
    let a = TestNode::start("emb-a", 106, NodeOptions::default()).await;
    let b = TestNode::start("emb-b", 107, NodeOptions::default()).await;
    a.create_collection(
        "vecs",
        json!({"embedding": {"model": "model-a", "dimensions": 2}}),
    )
    .await;
    b.create_collection(
        "vecs",
        json!({"embedding": {"model": "model-b", "dimensions": 2}}),
    )
    .await;
    a.create_collection("plain", json!({})).await;
    a.ok(
        "PUT",
        "/collections/vecs/documents/v1",
        Some(json!({"content": "a", "embedding": [1.0, 0.0]})),
    )
    .await;
    a.put_doc("plain", "p1", "text only").await;
    b.set_peers(&[(&a, "pull")], 10).await;
    let stats = b.sync().await;
    let err = stats[0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("vecs") && err.contains("model-a") && err.contains("model-b"),
        "{err}"
    );
    // The other collection synced; the mismatched one did not mix.
    assert_eq!(b.documents("plain").await.len(), 1);
    assert_eq!(b.documents("vecs").await.len(), 0);
    let status = b.status().await;
    assert_eq!(status["peers"][0]["blocked_collections"], json!(["vecs"]));
    // Once the settings agree, the collection syncs.
    b.create_collection(
        "vecs",
        json!({"embedding": {"model": "model-a", "dimensions": 2}}),
    )
    .await;
    let stats = b.sync().await;
    assert!(stats[0]["error"].is_null(), "{stats:?}");
    assert_eq!(b.documents("vecs").await.len(), 1);
}

#[tokio::test]
async fn partial_sync_and_adding_a_collection_resyncs_it() {
    let a = TestNode::start("part-a", 108, NodeOptions::default()).await;
    let b = TestNode::start("part-b", 109, NodeOptions::default()).await;
    for c in ["one", "two"] {
        a.create_collection(c, json!({})).await;
        for i in 0..10 {
            a.put_doc(c, &format!("{c}-{i}"), c).await;
        }
    }
    let cfg = |collections: Value| {
        json!({"peers": [{"peer_id": "part-a", "endpoint": a.url(), "direction": "pull",
            "collections": collections}], "interval_seconds": 3600, "batch_size": 4})
    };
    b.ok("PUT", "/admin/config", Some(cfg(json!(["one"]))))
        .await;
    b.sync().await;
    assert_eq!(b.documents("one").await.len(), 10);
    assert_eq!(b.call("GET", "/collections/two", None).await.0, 404);
    b.ok("PUT", "/admin/config", Some(cfg(json!(["one", "two"]))))
        .await;
    let stats = b.sync().await;
    assert!(stats[0]["error"].is_null(), "{stats:?}");
    assert_eq!(
        b.documents("two").await.len(),
        10,
        "the added collection synced from the start"
    );
    // Echo-free mesh afterwards converges.
    a.set_peers(&[(&b, "pull")], 4).await;
    a.sync().await;
    b.ok("PUT", "/admin/config", Some(cfg(json!([])))).await;
    b.sync().await;
    assert_converged(&[&a, &b]).await;
}

#[tokio::test]
async fn status_backlog_and_metrics_report_lag_inputs() {
    let a = TestNode::start("lag-a", 110, NodeOptions::default()).await;
    let b = TestNode::start("lag-b", 111, NodeOptions::default()).await;
    a.create_collection("docs", json!({})).await;
    for i in 0..5 {
        a.put_doc("docs", &format!("d{i}"), "x").await;
    }
    b.set_peers(&[(&a, "pull")], 100).await;
    b.wait_first_round().await;
    b.sync().await;
    let cp = b.status().await["peers"][0]["checkpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let backlog = a
        .ok("GET", &format!("/admin/backlog?since={cp}"), None)
        .await;
    assert_eq!(backlog, json!({"pending": 0, "oldest": null}));
    // Status and metrics before the new writes, which b's live pull then delivers.
    let status = b.status().await;
    let peer = &status["peers"][0];
    assert_eq!(peer["node_id"], a.status().await["node_id"]);
    assert!(peer["last_success_ms"].as_u64().unwrap() > 0);
    assert_eq!(peer["pulled_total"], 6);
    let metrics = b.ok("GET", "/metrics", None).await;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("ragsync_pulled_changes_total{peer=\"lag-a\"} 6"),
        "{text}"
    );
    assert!(text.contains("ragsync_documents 5"), "{text}");
    let rounds = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("ragsync_sync_round_seconds_count "))
            .unwrap_or_else(|| panic!("no round count:\n{text}"))
            .to_string()
    };
    let rounds_before = rounds(text);
    let w1 = a.put_doc("docs", "new1", "x").await;
    a.put_doc("docs", "new2", "x").await;
    let backlog = a
        .ok("GET", &format!("/admin/backlog?since={cp}"), None)
        .await;
    assert_eq!(backlog["pending"], 2);
    assert_eq!(backlog["oldest"], w1.hlc.as_str());
    // b pulls them live, with no sync call, and measures how long each took to arrive.
    let text = support::node::wait_for("live delivery to b", support::node::WAIT, || async {
        let m = b.ok("GET", "/metrics", None).await;
        let text = m.as_str().unwrap().to_string();
        text.contains("ragsync_pulled_changes_total{peer=\"lag-a\"} 8")
            .then_some(text)
    })
    .await;
    assert!(
        text.contains("ragsync_delivery_latency_seconds_count{peer=\"lag-a\"} 8"),
        "{text}"
    );
    assert!(text.contains("ragsync_waiting_requests 0"), "{text}");
    // Delivered by applying the waited page, not by rounds.
    assert_eq!(rounds(&text), rounds_before, "{text}");
}

/// Every `GET /sync/changes` page says in headers where the next one starts (what a puller
/// uses to request it before decoding this one), compressed or not, and the headers agree
/// with the body page after page.
#[tokio::test]
async fn change_pages_carry_their_watermark_in_headers() {
    use rag_sync::hlc::Hlc;
    use rag_sync::store::ChangeFilter;
    use rag_sync::sync::client::{build_client, ClientOptions, HttpSyncPeer};
    use rag_sync::wire::{HAS_MORE_HEADER, WATERMARK_HEADER};

    let n = TestNode::start("headers", 111, NodeOptions::default()).await;
    n.create_collection("docs", json!({})).await;
    for i in 0..5 {
        n.put_doc("docs", &format!("d{i}"), "text").await;
    }
    // The sync client (asks for zstd): the pages it decodes match their headers.
    let opts = ClientOptions::default();
    let peer = HttpSyncPeer::new("headers", &n.url(), build_client(&opts).unwrap(), opts);
    let (mut since, mut pages, mut changes) = (Hlc::ZERO, 0, 0);
    loop {
        let raw = peer
            .changes_raw(since, 2, &ChangeFilter::default())
            .await
            .unwrap();
        let (watermark, has_more) = raw.next.expect("headers on a page");
        let page = raw.decode().unwrap();
        assert_eq!((watermark, has_more), (page.watermark, page.has_more));
        assert!(watermark > since, "the next page starts further on");
        pages += 1;
        changes += page.changes.len();
        since = watermark;
        if !has_more {
            break;
        }
    }
    assert_eq!(
        (pages, changes),
        (3, 6),
        "the collection and 5 documents, 2 a page"
    );
    // A plain client gets the same headers on an uncompressed body.
    let resp = reqwest::Client::builder()
        .no_zstd()
        .no_gzip()
        .build()
        .unwrap()
        .get(format!(
            "{}/sync/changes?since=0000000000000000&limit=4",
            n.url()
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    let header = |name: &str| resp.headers()[name].to_str().unwrap().to_string();
    let (watermark, has_more) = (header(WATERMARK_HEADER), header(HAS_MORE_HEADER));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["watermark"], watermark.as_str());
    assert_eq!(has_more, "true");
    assert_eq!(body["has_more"], true);
}

/// Metadata is written in compact form where it is written and reaches other nodes as the
/// same bytes: the puller serves the document exactly as the writer does.
#[tokio::test]
async fn metadata_reaches_peers_byte_for_byte() {
    let a = TestNode::start("meta-a", 112, NodeOptions::default()).await;
    let b = TestNode::start("meta-b", 113, NodeOptions::default()).await;
    a.create_collection("docs", json!({})).await;
    let metadata = json!({"z": [1, {"c": "é \"q\""}], "a": 1.5, "m": {}, "n": null});
    a.ok(
        "PUT",
        "/collections/docs/documents/d1",
        Some(json!({"content": "x", "metadata": metadata})),
    )
    .await;
    b.set_peers(&[(&a, "pull")], 100).await;
    b.wait_first_round().await;
    b.sync().await;
    let raw = |n: &TestNode| {
        let url = format!("{}/collections/docs/documents/d1", n.url());
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let (on_a, on_b) = (raw(&a).await, raw(&b).await);
    assert!(
        on_a.contains(r#""metadata":{"a":1.5,"m":{},"n":null,"z":[1,{"c":"é \"q\""}]}"#),
        "compact, keys in order: {on_a}"
    );
    assert_eq!(on_a, on_b, "the pulled document is served byte for byte");
}
