//! The operator end to end against the real control plane: real CRDs with CEL validation,
//! the operator process running under the Helm chart's ServiceAccount and RBAC only, real
//! `rag-node` processes on loopback, Pod objects whose status the test fills in.

mod support;

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{json, Value};
use support::operator::{condition, Env};

const PEER_MESH: &str = r#"
apiVersion: ragsync.io/v1alpha1
kind: SyncPeer
metadata: {name: hub, labels: {ragsync.io/policy: docs}}
spec:
  selector: {matchLabels: {role: hub}}
  port: PORT
---
apiVersion: ragsync.io/v1alpha1
kind: SyncPeer
metadata: {name: spokes, labels: {ragsync.io/policy: docs}}
spec:
  selector: {matchLabels: {role: spoke}}
  port: PORT
---
apiVersion: ragsync.io/v1alpha1
kind: SyncPolicy
metadata: {name: docs}
spec:
  peerSelector: {matchLabels: {ragsync.io/policy: docs}}
  topology: {type: Mesh}
  interval: 2s
  statusInterval: 1s
  authSecretRef: {name: rag-sync-token, key: token}
"#;

fn ready(s: &Value) -> bool {
    condition(s, "Ready").is_some_and(|(st, _)| st == "True")
}

async fn wait_doc(env: &Env, i: usize, id: &str) {
    let start = Instant::now();
    loop {
        let (code, _) = env.nodes[i]
            .call("GET", &format!("/collections/docs/documents/{id}"), None)
            .await;
        if code == 200 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{id} never reached node {i}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn mesh_hub_and_spoke_membership_conflicts_and_steady_state() {
    let mut env = Env::new("e2e-mesh", &[121, 122, 123]).await;
    env.create_pod(0, json!({"app": "rag", "role": "hub"}))
        .await;
    env.create_pod(1, json!({"app": "rag", "role": "spoke"}))
        .await;
    env.create_pod(2, json!({"app": "rag", "role": "spoke"}))
        .await;
    env.apply(PEER_MESH);
    env.start_operator("op-a").await;

    // 1. Mesh: every node lists the other two; a write on one reaches all.
    env.wait_node_peers(0, &["rag-1", "rag-2"]).await;
    env.wait_node_peers(1, &["rag-0", "rag-2"]).await;
    env.wait_node_peers(2, &["rag-0", "rag-1"]).await;
    env.nodes[0].create_collection("docs", json!({})).await;
    env.nodes[0].put_doc("docs", "hello", "from rag-0").await;
    wait_doc(&env, 1, "hello").await;
    wait_doc(&env, 2, "hello").await;
    let s = env
        .wait_policy("docs", "Ready and Converged with 3 members", |s| {
            ready(s)
                && s["members"] == 3
                && s["readyMembers"] == 3
                && s["maxLagSeconds"] == 0
                && s["conflicts"] == 0
                && condition(s, "Converged").is_some_and(|(st, _)| st == "True")
        })
        .await;
    assert_eq!(s["edges"].as_array().unwrap().len(), 6, "{s:#}");
    let hub = env.peer_status("hub").await;
    assert!(ready(&hub), "{hub:#}");
    assert_eq!(hub["policy"], "docs");
    assert!(
        hub["watermark"].as_str().is_some_and(|w| w.len() == 16),
        "{hub:#}"
    );
    assert_eq!(hub["members"][0]["pod"], "rag-0");
    assert!(hub["members"][0]["nodeId"].is_string());
    let table = env
        .c
        .kubectl_ok(&["get", "syncpeers,syncpolicies", "-n", &env.ns]);
    println!("{table}");
    for col in [
        "MEMBERS",
        "READY",
        "WATERMARK",
        "LAG",
        "CONFLICTS",
        "AGE",
        "TOPOLOGY",
        "CONVERGED",
    ] {
        assert!(table.contains(col), "printer column {col} in:\n{table}");
    }
    assert!(table.contains("Mesh"), "{table}");

    // 6. Concurrent writes to one document on two nodes: conflicts counted in status.
    env.nodes[1]
        .put_doc("docs", "contended", "edit on rag-1")
        .await;
    env.nodes[2]
        .put_doc("docs", "contended", "edit on rag-2")
        .await;
    let s = env
        .wait_policy("docs", "conflicts counted", |s| {
            s["conflicts"].as_i64() >= Some(3)
        })
        .await;
    assert!(s["conflicts"].as_i64().unwrap() >= 3, "{s:#}");
    env.wait_event("ConflictsDetected").await;

    // 9. Steady state: nothing changes, so no writes to the API server and no config PUTs.
    env.wait_policy("docs", "converged again", |s| {
        condition(s, "Converged").is_some_and(|(st, _)| st == "True")
    })
    .await;
    let versions = |env: &Env| env.resource_versions();
    // Let in-flight background rounds settle, then watch a quiet 30 s window.
    env.wait_policy("docs", "no pending changes", |s| s["maxLagSeconds"] == 0)
        .await;
    let before = versions(&env);
    let pushes_before = env
        .operator_metric("op-a", "ragsync_operator_config_pushes_total")
        .await;
    let reconciles_before = env
        .operator_metric("op-a", "ragsync_operator_reconciles_total")
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(versions(&env), before, "no status writes in a quiet 30 s");
    assert_eq!(
        env.operator_metric("op-a", "ragsync_operator_config_pushes_total")
            .await,
        pushes_before,
        "no config PUTs in a quiet 30 s"
    );
    assert!(
        env.operator_metric("op-a", "ragsync_operator_reconciles_total")
            .await
            > reconciles_before,
        "the operator kept refreshing (reading) during the window"
    );

    // 2. Mesh -> HubAndSpoke: spokes list only the hub; the hub lists both spokes.
    env.policies()
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"topology": {"type": "HubAndSpoke", "hubs": ["hub"]}}})),
        )
        .await
        .unwrap();
    env.wait_node_peers(1, &["rag-0"]).await;
    env.wait_node_peers(2, &["rag-0"]).await;
    env.wait_node_peers(0, &["rag-1", "rag-2"]).await;
    env.wait_policy("docs", "4 hub-and-spoke edges", |s| {
        s["edges"].as_array().is_some_and(|e| e.len() == 4)
    })
    .await;
    let table = env.c.kubectl_ok(&["get", "syncpolicies", "-n", &env.ns]);
    assert!(table.contains("HubAndSpoke"), "{table}");

    // 3. A pod not ready leaves its peers' configs; ready again, it comes back.
    env.set_pod_ready(2, false).await;
    env.wait_node_peers(0, &["rag-1"]).await;
    let s = env
        .wait_policy("docs", "rag-2 not ready", |s| s["readyMembers"] == 2)
        .await;
    assert!(!ready(&s));
    env.set_pod_ready(2, true).await;
    env.wait_node_peers(0, &["rag-1", "rag-2"]).await;
    env.wait_policy("docs", "all ready again", |s| {
        ready(s) && s["readyMembers"] == 3
    })
    .await;

    // 4. A SyncPeer deleted: removed from every config before the object disappears.
    let spokes = env.peers().get("spokes").await.unwrap();
    assert!(
        spokes
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "ragsync.io/cleanup"),
        "the operator put its finalizer on the peer"
    );
    env.peers()
        .delete("spokes", &DeleteParams::default())
        .await
        .unwrap();
    let start = Instant::now();
    while env.peers().get_opt("spokes").await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the SyncPeer was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        env.node_peers(0).await,
        Vec::<String>::new(),
        "hub config updated before the peer went"
    );
    assert_eq!(
        env.node_peers(1).await,
        Vec::<String>::new(),
        "the deleted peer's pods were cleared"
    );
    for reason in ["MemberAdded", "MemberRemoved", "PeerRemoved"] {
        env.wait_event(reason).await;
    }
}

/// The nodes serve HTTPS with mutual TLS and keep `/admin/*` behind the admin token: the
/// operator reaches them at their pods' DNS names with the policy's CA, its client
/// certificate and the admin token; the nodes reach each other the same way (the operator
/// tells them each name's address) with the sync token; a write is delivered live.
#[tokio::test]
async fn nodes_behind_mutual_tls_and_two_tokens_sync_live() {
    let mut env = Env::new_tls("e2e-tls", &[141, 142, 143]).await;
    for i in 0..3 {
        env.create_pod(i, json!({"role": "spoke"})).await;
    }
    env.apply(
        r#"
apiVersion: ragsync.io/v1alpha1
kind: SyncPeer
metadata: {name: spokes, labels: {ragsync.io/policy: docs}}
spec:
  selector: {matchLabels: {role: spoke}}
  port: PORT
---
apiVersion: ragsync.io/v1alpha1
kind: SyncPolicy
metadata: {name: docs}
spec:
  peerSelector: {matchLabels: {ragsync.io/policy: docs}}
  topology: {type: Mesh}
  interval: 1h
  statusInterval: 1s
  authSecretRef: {name: rag-admin-token}
  tls:
    caSecretRef: {name: rag-sync-ca}
    clientCertSecretRef: {name: rag-sync-operator-tls}
"#,
    );
    env.start_operator("op").await;
    env.wait_node_peers(0, &["rag-1", "rag-2"]).await;
    let cfg = env.nodes[0].ok("GET", "/admin/config", None).await;
    let peer = &cfg["peers"][0];
    assert_eq!(
        peer["endpoint"],
        format!("https://rag-1.rag.{}.svc:{}", env.ns, env.port),
        "{cfg:#}"
    );
    assert_eq!(
        peer["address"],
        env.nodes[1].addr.ip().to_string(),
        "{cfg:#}"
    );

    // No timer on the path (the interval is an hour): live delivery over HTTPS.
    env.nodes[0].create_collection("docs", json!({})).await;
    env.nodes[0].put_doc("docs", "secret", "over mTLS").await;
    wait_doc(&env, 1, "secret").await;
    wait_doc(&env, 2, "secret").await;
    env.wait_policy("docs", "Ready with 3 members", |s| {
        ready(s) && s["readyMembers"] == 3
    })
    .await;

    // A CA the nodes' certificates do not chain to: every member says why.
    let other = support::pki::Ca::new(env.ca.as_ref().unwrap().1.path(), "other");
    let pem = std::fs::read_to_string(&other.ca_file).unwrap();
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: rag-sync-ca}}\nstringData:\n  ca.crt: |\n{}",
        pem.lines().map(|l| format!("    {l}\n")).collect::<String>()
    ));
    let s = env
        .wait_policy("docs", "Degraded by the wrong CA", |s| {
            condition(s, "Degraded").is_some_and(|(st, _)| st == "True")
        })
        .await;
    let peer = env.peer_status("spokes").await;
    let err = peer["members"][0]["lastError"].as_str().unwrap_or_default();
    assert!(err.contains("certificate"), "{err}\n{s:#}\n{peer:#}");
}

#[tokio::test]
async fn node_failure_is_degraded_with_a_reason_and_recovers() {
    let mut env = Env::new("e2e-fail", &[131, 132]).await;
    env.create_pod(0, json!({"role": "hub"})).await;
    env.create_pod(1, json!({"role": "spoke"})).await;
    env.apply(PEER_MESH);
    env.start_operator("op").await;
    env.wait_policy("docs", "ready", |s| ready(s) && s["readyMembers"] == 2)
        .await;

    // 5. Kill a node: Degraded with a reason and an event.
    env.nodes[1].kill9();
    let s = env
        .wait_policy("docs", "Degraded", |s| {
            condition(s, "Degraded").is_some_and(|(st, _)| st == "True")
        })
        .await;
    let (_, reason) = condition(&s, "Degraded").unwrap();
    assert!(
        ["NodeUnreachable", "SyncFailed"].contains(&reason.as_str()),
        "reason {reason}: {s:#}"
    );
    let peer = env.peer_status("spokes").await;
    assert_eq!(condition(&peer, "Degraded").unwrap().0, "True", "{peer:#}");
    assert!(peer["members"][0]["lastError"].is_string(), "{peer:#}");
    env.wait_event("SyncFailed").await;

    // Restarted: recovers.
    env.nodes[1].restart().await;
    env.wait_policy("docs", "recovered", |s| {
        ready(s) && condition(s, "Degraded").is_some_and(|(st, _)| st == "False")
    })
    .await;
}

#[tokio::test]
async fn leader_election_restart_and_takeover() {
    let mut env = Env::new("e2e-lead", &[141, 142]).await;
    env.create_pod(0, json!({"role": "hub"})).await;
    env.create_pod(1, json!({"role": "spoke"})).await;
    env.apply(PEER_MESH);
    env.start_operator("first").await;
    env.wait_node_peers(0, &["rag-1"]).await;
    env.wait_policy("docs", "ready", ready).await;
    let status_before = env.policy_status("docs").await;

    // 8. A second operator stands by and does nothing while the first leads.
    env.start_operator("second").await;
    let start = Instant::now();
    while env.operator_log("second").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        env.operator_metric("first", "ragsync_operator_leader")
            .await,
        1.0
    );
    assert_eq!(
        env.operator_metric("second", "ragsync_operator_leader")
            .await,
        0.0
    );
    assert_eq!(
        env.operator_metric("second", "ragsync_operator_reconciles_total")
            .await,
        0.0
    );

    // Kill the leader: the standby takes over within the lease duration.
    env.kill_operator("first");
    let killed = Instant::now();
    let start = Instant::now();
    while env
        .operator_metric("second", "ragsync_operator_leader")
        .await
        != 1.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the standby never took over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        killed.elapsed() < Duration::from_secs(6 + 3 + 2),
        "took over within the lease duration"
    );
    // The new leader finds status intact and pushes no duplicate configs.
    let start = Instant::now();
    while env
        .operator_metric("second", "ragsync_operator_reconciles_total")
        .await
        < 2.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new leader reconciles"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        env.operator_metric("second", "ragsync_operator_config_pushes_total")
            .await,
        0.0,
        "configs already matched: no PUTs after the restart"
    );
    let after = env.policy_status("docs").await;
    assert_eq!(after["members"], status_before["members"]);
    assert_eq!(
        condition(&after, "Ready"),
        condition(&status_before, "Ready")
    );
    // And it acts: a topology change is applied by the new leader.
    env.policies()
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    env.wait_node_peers(0, &[]).await;
}

#[tokio::test]
async fn bad_manifests_are_refused_with_a_clear_message() {
    let c = support::cluster::cluster().await;
    support::operator::apply_crds(&c);
    let ns = c.fresh_namespace("e2e-bad").await;
    let dir = support::cluster::repo_root().join("tests/fixtures/bad-manifests");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} names its expected message", path.display()))
            .trim()
            .to_string();
        let out = c.kubectl_as(&c.kubeconfig, &["apply", "-n", &ns, "-f", "-"], Some(&text));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", path.display());
        assert!(
            stderr.contains(&expect),
            "{}: expected {expect:?} in:\n{stderr}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 20, "all bad manifests checked ({n})");
}
