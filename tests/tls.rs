//! TLS and the two tokens, between real `rag-node` processes: sync over HTTPS, peers with a
//! certificate from another CA or an expired one are refused with a clear error, mutual TLS
//! refuses clients without a certificate, and replaced certificate and token files take
//! effect without a restart.

mod support;

use std::net::IpAddr;
use std::path::Path;

use serde_json::{json, Value};
use support::node::{wait_for, NodeOptions, NodeTls, TestNode, WAIT};
use support::pki::{write_atomically, Ca, Leaf, Validity};

fn ip(octet: u8) -> IpAddr {
    format!("127.0.0.{octet}").parse().unwrap()
}

/// Options for a node serving `leaf` and trusting `trust`; with `accept_invalid` the test's
/// own client accepts the node's certificate whatever it is (to reach a node peers refuse).
fn serving(leaf: Leaf, trust: &Path, mutual: bool, accept_invalid: bool) -> NodeOptions {
    NodeOptions {
        tls: Some(NodeTls {
            leaf,
            ca: trust.to_path_buf(),
            mutual,
            accept_invalid,
        }),
        ..Default::default()
    }
}

/// Options for a node on 127.0.0.`octet` serving a certificate of `ca` for that address.
fn https(ca: &Ca, name: &str, octet: u8, trust: &Path, mutual: bool) -> NodeOptions {
    let leaf = ca.leaf(name, &[ip(octet)], &[], Validity::Current);
    serving(leaf, trust, mutual, false)
}

/// The error of the round's only peer after a `POST /admin/sync`.
async fn round_error(n: &TestNode) -> Option<String> {
    let stats = n.sync().await;
    stats[0]["error"].as_str().map(String::from)
}

#[tokio::test]
async fn nodes_sync_over_https_and_refuse_untrusted_or_expired_peers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let other = Ca::new(dir.path(), "other");
    let a = TestNode::start("a", 221, https(&ca, "a", 221, &ca.ca_file, false)).await;
    let b = TestNode::start("b", 222, https(&ca, "b", 222, &ca.ca_file, false)).await;
    assert!(a.url().starts_with("https://"));
    a.create_collection("docs", json!({})).await;
    a.put_doc("docs", "d1", "over tls").await;
    b.set_peers(&[(&a, "pull")], 100).await;
    assert_eq!(round_error(&b).await, None);
    assert_eq!(b.documents("docs").await.len(), 1);

    // Plain HTTP to an HTTPS node gets nowhere.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/readyz", a.addr))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // A peer whose certificate another CA signed is refused, and the error says why.
    let stranger = TestNode::start(
        "stranger",
        223,
        serving(
            other.leaf("stranger", &[ip(223)], &[], Validity::Current),
            &ca.ca_file,
            false,
            true,
        ),
    )
    .await;
    stranger.create_collection("docs", json!({})).await;
    stranger.put_doc("docs", "evil", "unsigned").await;
    b.set_peers(&[(&stranger, "pull")], 100).await;
    let e = round_error(&b).await.expect("the stranger is refused");
    assert!(
        e.contains("certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );
    assert!(b.status().await["peers"][0]["last_error"]
        .as_str()
        .is_some_and(|s| s.contains("certificate")));

    // So is one whose certificate has expired.
    let expired = TestNode::start(
        "expired",
        224,
        serving(
            ca.leaf("expired", &[ip(224)], &[], Validity::Expired),
            &ca.ca_file,
            false,
            true,
        ),
    )
    .await;
    expired.create_collection("docs", json!({})).await;
    b.set_peers(&[(&expired, "pull")], 100).await;
    let e = round_error(&b).await.expect("the expired peer is refused");
    assert!(e.contains("certificate") && e.contains("xpired"), "{e}");
    assert!(
        !b.documents("docs").await.contains_key("evil"),
        "nothing came from a refused peer"
    );
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let other = Ca::new(dir.path(), "other");
    // a starts with a certificate b does not trust, as if issued by the wrong issuer.
    let leaf = other.leaf("a", &[ip(225)], &[], Validity::Current);
    let a = TestNode::start("a", 225, serving(leaf.clone(), &ca.ca_file, false, true)).await;
    let b = TestNode::start("b", 226, https(&ca, "b", 226, &ca.ca_file, false)).await;
    a.create_collection("docs", json!({})).await;
    a.put_doc("docs", "d1", "renewed").await;
    b.set_peers(&[(&a, "pull")], 100).await;
    assert!(round_error(&b)
        .await
        .is_some_and(|e| e.contains("UnknownIssuer")));

    // The right certificate lands in the same files (as cert-manager renews a Secret).
    let fresh = ca.leaf("a-renewed", &[ip(225)], &[], Validity::Current);
    write_atomically(&leaf.key, &std::fs::read_to_string(&fresh.key).unwrap());
    write_atomically(&leaf.cert, &std::fs::read_to_string(&fresh.cert).unwrap());
    wait_for("b to accept a's renewed certificate", WAIT, || async {
        round_error(&b).await.is_none().then_some(())
    })
    .await;
    assert_eq!(b.documents("docs").await.len(), 1);
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let other = Ca::new(dir.path(), "other");
    let m = TestNode::start("m", 227, https(&ca, "m", 227, &ca.ca_file, true)).await;
    m.create_collection("docs", json!({})).await;
    m.put_doc("docs", "d1", "mutual").await;
    let trusting = || {
        reqwest::Client::builder().add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca.ca_file).unwrap()).unwrap(),
        )
    };

    // Without a client certificate: the probes answer, nothing else does.
    let bare = trusting().build().unwrap();
    let r = bare
        .get(format!("{}/readyz", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = bare
        .get(format!("{}/sync/watermark", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|s| s.contains("client certificate")),
        "{body}"
    );

    // A certificate from another CA does not get through the handshake.
    let foreign = other.leaf("foreign", &[], &["foreign"], Validity::Current);
    let mut pem = std::fs::read(&foreign.cert).unwrap();
    pem.extend(std::fs::read(&foreign.key).unwrap());
    let r = trusting()
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap()
        .get(format!("{}/sync/watermark", m.url()))
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");

    // A peer presenting its serving certificate pulls.
    let b = TestNode::start("b", 228, https(&ca, "b", 228, &ca.ca_file, false)).await;
    b.set_peers(&[(&m, "pull")], 100).await;
    assert_eq!(round_error(&b).await, None);
    assert_eq!(b.documents("docs").await.len(), 1);
}

#[tokio::test]
async fn the_sync_token_does_not_open_the_admin_api() {
    let opts = NodeOptions {
        token: Some("sync-secret".into()),
        admin_token: Some("admin-secret".into()),
        ..Default::default()
    };
    let n = TestNode::start("two-tokens", 229, opts).await;
    n.create_collection("docs", json!({})).await;
    let call = |path: &str, token: Option<&str>| {
        let r = n.request_without_token("GET", path);
        let r = match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        };
        async move { r.send().await.unwrap() }
    };
    let r = call("/admin/config", Some("sync-secret")).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|s| s.contains("admin token")),
        "{body}"
    );
    for (path, token, status) in [
        ("/admin/config", Some("admin-secret"), 200),
        ("/admin/config", None, 401),
        ("/sync/watermark", Some("sync-secret"), 200),
        ("/sync/watermark", Some("admin-secret"), 200),
        ("/sync/watermark", Some("wrong"), 401),
        ("/collections", Some("sync-secret"), 200),
        ("/healthz", None, 200),
    ] {
        assert_eq!(call(path, token).await.status(), status, "{path} {token:?}");
    }

    // A peer holding only the sync token pulls: sync needs nothing more.
    let peer = TestNode::start(
        "sync-only",
        230,
        NodeOptions {
            token: Some("sync-secret".into()),
            ..Default::default()
        },
    )
    .await;
    n.put_doc("docs", "d", "x").await;
    peer.set_peers(&[(&n, "pull")], 10).await;
    assert_eq!(round_error(&peer).await, None);
    assert_eq!(peer.documents("docs").await.len(), 1);
}

#[tokio::test]
async fn a_rotated_token_file_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("sync-token");
    std::fs::write(&shared, "first\n").unwrap();
    let opts = NodeOptions {
        admin_token: Some("admin".into()),
        extra_args: vec!["--token-file".into(), shared.display().to_string()],
        ..Default::default()
    };
    let a = TestNode::start("rot-a", 231, opts.clone()).await;
    let b = TestNode::start("rot-b", 232, opts).await;
    a.create_collection("docs", json!({})).await;
    a.put_doc("docs", "d1", "x").await;
    b.set_peers(&[(&a, "pull")], 10).await;
    assert_eq!(round_error(&b).await, None);
    let with = |t: &'static str| {
        let r = a
            .request_without_token("GET", "/sync/watermark")
            .bearer_auth(t);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(with("first").await, 200);

    // Step 1: the new token is added second; both are accepted, the old one is still sent.
    write_atomically(&shared, "first\nsecond\n");
    wait_for("the second token to be accepted", WAIT, || async {
        (with("second").await == 200).then_some(())
    })
    .await;
    assert_eq!(with("first").await, 200);
    // Step 2: only the new one; the old is refused and the nodes still sync.
    write_atomically(&shared, "second\n");
    wait_for("the first token to be refused", WAIT, || async {
        (with("first").await == 401).then_some(())
    })
    .await;
    a.put_doc("docs", "d2", "y").await;
    assert_eq!(round_error(&b).await, None);
    assert_eq!(b.documents("docs").await.len(), 2);
}

/// The certificate the rag-node chart generates (an RSA key, wildcard names for the pods of
/// the headless Service) is one rag-node serves and verifies: nodes reach each other by the
/// pods' DNS names with the operator's address override, and a name the certificate does not
/// hold is refused.
#[tokio::test]
async fn the_charts_generated_certificate_names_every_pod() {
    use support::helm::{render, NODE_CHART};
    use support::yaml::{decode_base64, name, of_kind};
    let docs = render(
        NODE_CHART,
        "rag",
        "tls-ns",
        Some("tls:\n  enabled: true\n  clientAuth: true\n  extraIpAddresses: [127.0.0.233, 127.0.0.234]\n"),
    );
    let secrets = of_kind(&docs, "Secret");
    let tls = secrets
        .iter()
        .find(|s| name(s) == "rag-tls")
        .expect("rag-tls");
    let dir = tempfile::tempdir().unwrap();
    let file = |k: &str| {
        let p = dir.path().join(k);
        std::fs::write(&p, decode_base64(tls["data"][k].as_str().unwrap())).unwrap();
        p
    };
    let leaf = Leaf {
        cert: file("tls.crt"),
        key: file("tls.key"),
    };
    let opts = serving(leaf, &file("ca.crt"), true, false);
    let a = TestNode::start("rag-rag-node-0", 233, opts.clone()).await;
    let b = TestNode::start("rag-rag-node-1", 234, opts).await;
    a.create_collection("docs", json!({})).await;
    a.put_doc("docs", "d1", "by name").await;
    let pull_from = |host: &str| {
        json!({"peers": [{"peer_id": "a", "direction": "pull",
                          "endpoint": format!("https://{host}:{}", a.addr.port()),
                          "address": a.addr.ip().to_string()}],
               "interval_seconds": 3600})
    };
    b.ok(
        "PUT",
        "/admin/config",
        Some(pull_from("rag-rag-node-0.rag-rag-node.tls-ns.svc")),
    )
    .await;
    assert_eq!(round_error(&b).await, None);
    assert_eq!(b.documents("docs").await.len(), 1);

    b.ok(
        "PUT",
        "/admin/config",
        Some(pull_from("rag-0.elsewhere.tls-ns.svc")),
    )
    .await;
    let e = round_error(&b)
        .await
        .expect("a name outside the certificate");
    assert!(e.contains("certificate not valid for name"), "{e}");
}

#[test]
fn an_admin_token_without_a_sync_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin-token");
    std::fs::write(&admin, "admin-secret\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rag-node"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--admin-token-file")
        .arg(&admin)
        .env_remove("RAG_SYNC_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs a sync token too"), "{stderr}");
}
