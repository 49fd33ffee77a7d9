//! The `examples/` against the Helm charts: they fit the rag-node chart installed as `rag`
//! (labels, port, token Secret), and the real API server accepts them (schema and CEL).

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{json, Value};

use support::cluster::{cluster, repo_root, TestCluster};
use support::helm::{ok, render, NODE_CHART};
use support::yaml::{name, of_kind, one, parse_yaml_stream, port_named, strings};

/// Ensures the SyncPeer/SyncPolicy CRDs from `crds/` are applied and Established (other test
/// binaries apply them the same way: server-side, idempotent).
fn ensure_crds(c: &TestCluster) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let crds = std::fs::read_to_string(repo_root().join("crds/ragsync.io.yaml"))
            .expect("read crds/ragsync.io.yaml");
        let args = [
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=rag-sync-tests",
            "-f",
            "-",
        ];
        ok(
            "kubectl apply of crds/ragsync.io.yaml",
            c.kubectl_as(&c.kubeconfig, &args, Some(&crds)),
        );
        c.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd/syncpeers.ragsync.io",
            "crd/syncpolicies.ragsync.io",
            "--timeout=60s",
        ]);
    });
}

fn example_docs(dir: &str) -> Vec<Value> {
    let path = repo_root().join("examples").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| parse_yaml_stream(&std::fs::read_to_string(f).expect("read example")))
        .collect()
}

#[test]
fn examples_fit_the_rag_node_chart_installed_as_rag() {
    let chart = render(NODE_CHART, "rag", "rag", None);
    let sts = one(&chart, "StatefulSet");
    let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
    let secrets = of_kind(&chart, "Secret");
    let admin = secrets
        .iter()
        .find(|s| name(s) == "rag-admin-token")
        .expect("the chart's admin token Secret");
    let tls = secrets
        .iter()
        .find(|s| name(s) == "rag-tls")
        .expect("the chart's TLS Secret");
    let port = port_named(&sts["spec"]["template"]["spec"]["containers"][0], "http");

    for (dir, policy_count, peer_count) in
        [("mesh", 1, 1), ("sparse", 1, 1), ("hub-and-spoke", 1, 2)]
    {
        let docs = example_docs(dir);
        let policies = of_kind(&docs, "SyncPolicy");
        let peers = of_kind(&docs, "SyncPeer");
        assert_eq!(policies.len(), policy_count, "{dir}: SyncPolicies");
        assert_eq!(peers.len(), peer_count, "{dir}: SyncPeers");
        for d in &docs {
            assert_eq!(d["apiVersion"], "ragsync.io/v1alpha1", "{dir}");
            assert!(
                d["metadata"]["namespace"].is_null(),
                "{dir}: examples apply into the namespace the user picks"
            );
        }
        let policy = policies[0];
        assert_eq!(
            policy["spec"]["authSecretRef"],
            json!({"name": name(admin), "key": "token"}),
            "{dir}: authSecretRef names the chart's admin token Secret"
        );
        assert_eq!(
            policy["spec"]["tls"],
            json!({"caSecretRef": {"name": name(tls), "key": "ca.crt"}}),
            "{dir}: tls names the chart's CA"
        );
        // The policy selects every SyncPeer of the example.
        for peer in &peers {
            for (k, v) in policy["spec"]["peerSelector"]["matchLabels"]
                .as_object()
                .expect("peerSelector.matchLabels")
            {
                assert_eq!(
                    &peer["metadata"]["labels"][k],
                    v,
                    "{dir}: {} is selected",
                    name(peer)
                );
            }
        }
        // In-cluster peers select the chart's pods on the chart's port.
        let in_cluster: Vec<_> = peers
            .iter()
            .filter(|p| !p["spec"]["selector"].is_null())
            .collect();
        assert_eq!(in_cluster.len(), 1, "{dir}: one in-cluster SyncPeer");
        for (k, v) in in_cluster[0]["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("selector.matchLabels")
        {
            assert_eq!(&pod_labels[k], v, "{dir}: the chart's pods carry {k}");
        }
        assert_eq!(in_cluster[0]["spec"]["port"], port, "{dir}: port");
    }

    let docs = example_docs("mesh");
    assert_eq!(
        one(&docs, "SyncPolicy")["spec"]["topology"],
        json!({"type": "Mesh"})
    );
    let docs = example_docs("sparse");
    assert_eq!(
        one(&docs, "SyncPolicy")["spec"]["topology"],
        json!({"type": "Sparse", "fanout": 3})
    );
    let docs = example_docs("hub-and-spoke");
    let policy = one(&docs, "SyncPolicy");
    assert_eq!(policy["spec"]["topology"]["type"], "HubAndSpoke");
    let hubs = strings(&policy["spec"]["topology"]["hubs"]);
    let peers = of_kind(&docs, "SyncPeer");
    let hub = peers
        .iter()
        .find(|p| hubs.contains(&name(p).to_string()))
        .expect("the hub");
    assert!(!hub["spec"]["selector"].is_null(), "the hub is in-cluster");
    let spokes: Vec<_> = peers
        .iter()
        .filter(|p| !hubs.contains(&name(p).to_string()))
        .collect();
    assert_eq!(spokes.len(), 1);
    assert!(
        spokes[0]["spec"]["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("https://")),
        "the spoke is an external endpoint"
    );
}

#[tokio::test]
async fn examples_are_accepted_by_the_api_server() {
    let c = cluster().await;
    ensure_crds(&c);
    for dir in ["mesh", "sparse", "hub-and-spoke"] {
        let ns = c.fresh_namespace(&format!("helm-example-{dir}")).await;
        let path = repo_root().join("examples").join(dir);
        let path = path.to_string_lossy();
        // Server-side dry run: schema and CEL validation, nothing stored.
        let out = c.kubectl_ok(&["apply", "--dry-run=server", "-n", &ns, "-f", &path]);
        assert!(out.contains("(server dry run)"), "{out}");
        // And for real: the objects exist and `kubectl get` lists them.
        c.kubectl_ok(&["apply", "-n", &ns, "-f", &path]);
        let listed = c.kubectl_ok(&["get", "syncpolicies,syncpeers", "-n", &ns, "-o", "name"]);
        let expected = example_docs(dir).len();
        assert_eq!(listed.lines().count(), expected, "{dir}: {listed}");
    }
}
