//! The charts installed, upgraded and uninstalled on the real control plane: everything they
//! render exists and then goes, two operator releases do not collide, the rag-node token
//! survives upgrades, and the operator's ServiceAccount gets exactly the RBAC it needs
//! (`kubectl auth can-i` with its own token).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use support::cluster::{cluster, TestCluster};
use support::helm::{assert_hardened, helm_on, ok, text, NODE_CHART, OPERATOR_CHART};
use support::node::wait_for;
use support::rbac::{expected_cluster_permissions, expected_lease_permissions, permissions};
use support::yaml::decode_base64;

const WAIT: Duration = Duration::from_secs(60);

/// `kubectl get <kind> <name> [-n ns] -o json` if it exists.
fn get_object(c: &TestCluster, kind: &str, name: &str, ns: Option<&str>) -> Option<Value> {
    let mut args = vec!["get", kind, name, "--ignore-not-found", "-o", "json"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let out = ok(&format!("kubectl {}", args.join(" ")), c.kubectl(&args));
    if out.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(&out).expect("kubectl -o json"))
    }
}

async fn wait_gone(c: &TestCluster, kind: &str, name: &str, ns: Option<&str>) {
    wait_for(&format!("{kind} {name} to be deleted"), WAIT, || async {
        get_object(c, kind, name, ns).is_none().then_some(())
    })
    .await;
}

/// `kubectl auth can-i` as the kubeconfig's user: true for "yes".
fn can_i(c: &TestCluster, kubeconfig: &Path, args: &[&str]) -> bool {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let out = c.kubectl_as(kubeconfig, &full, None);
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        _ => panic!("kubectl {} answered oddly:\n{}", full.join(" "), text(&out)),
    }
}

#[tokio::test]
async fn operator_chart_installs_grants_exactly_its_rbac_and_uninstalls_cleanly() {
    let c = cluster().await;
    let ns = c.fresh_namespace("helm-operator").await;
    let other = c.fresh_namespace("helm-operator-other").await;
    let release = "op";
    let out = ok(
        "helm install of the operator chart",
        helm_on(&c, &["install", release, OPERATOR_CHART, "-n", &ns]),
    );
    // NOTES.txt tells the user what to do next.
    assert!(out.contains("kubectl apply"), "{out}");
    assert!(out.contains("syncpolicies,syncpeers"), "{out}");

    // The CRDs are there (installed from the chart's crds/, or already present: helm skips
    // existing CRDs), and Established.
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/syncpeers.ragsync.io",
        "crd/syncpolicies.ragsync.io",
        "--timeout=60s",
    ]);

    // Everything the chart renders now exists.
    let fullname = "op-rag-sync-operator";
    let cluster_name = format!("{ns}-{fullname}");
    let namespaced = [
        ("serviceaccount", fullname.to_string()),
        ("role", format!("{fullname}-leader-election")),
        ("rolebinding", format!("{fullname}-leader-election")),
        ("deployment", fullname.to_string()),
        ("service", format!("{fullname}-metrics")),
        ("poddisruptionbudget", fullname.to_string()),
        ("networkpolicy", fullname.to_string()),
    ];
    let cluster_scoped = [
        ("clusterrole", cluster_name.clone()),
        ("clusterrolebinding", cluster_name.clone()),
    ];
    for (kind, name) in &namespaced {
        assert!(
            get_object(&c, kind, name, Some(&ns)).is_some(),
            "{kind} {ns}/{name} was not installed"
        );
    }
    for (kind, name) in &cluster_scoped {
        assert!(
            get_object(&c, kind, name, None).is_some(),
            "{kind} {name} was not installed"
        );
    }
    let deploy = get_object(&c, "deployment", fullname, Some(&ns)).unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_hardened(&deploy["spec"]["template"]["spec"], "installed Deployment");

    // The API server holds exactly the rules the operator needs.
    let cr = get_object(&c, "clusterrole", &cluster_name, None).unwrap();
    assert_eq!(permissions(&cr), expected_cluster_permissions());
    let role = get_object(
        &c,
        "role",
        &format!("{fullname}-leader-election"),
        Some(&ns),
    )
    .unwrap();
    assert_eq!(permissions(&role), expected_lease_permissions());

    // And the chart's ServiceAccount, authenticated with its own token, gets exactly those.
    let kc = c.service_account_kubeconfig(&ns, fullname).await;
    let nsf = format!("--namespace={ns}");
    let otherf = format!("--namespace={other}");
    let allowed: &[&[&str]] = &[
        &["list", "syncpeers.ragsync.io", "--all-namespaces"],
        &["watch", "syncpolicies.ragsync.io", "--all-namespaces"],
        &["patch", "syncpeers.ragsync.io", &otherf],
        &["update", "syncpolicies.ragsync.io", &otherf],
        &[
            "patch",
            "syncpeers.ragsync.io",
            "--subresource=status",
            &otherf,
        ],
        &[
            "update",
            "syncpolicies.ragsync.io",
            "--subresource=status",
            &otherf,
        ],
        &[
            "update",
            "syncpeers.ragsync.io",
            "--subresource=finalizers",
            &otherf,
        ],
        &["watch", "pods", "--all-namespaces"],
        &["get", "secrets", &otherf],
        &["create", "events.events.k8s.io", &otherf],
        &["patch", "events.events.k8s.io", &otherf],
        &["get", "leases.coordination.k8s.io", &nsf],
        &["create", "leases.coordination.k8s.io", &nsf],
        &["update", "leases.coordination.k8s.io", &nsf],
    ];
    let denied: &[&[&str]] = &[
        &["list", "secrets", &otherf],
        &["watch", "secrets", "--all-namespaces"],
        &["create", "secrets", &nsf],
        &["create", "syncpeers.ragsync.io", &otherf],
        &["delete", "syncpolicies.ragsync.io", &otherf],
        &[
            "patch",
            "syncpeers.ragsync.io",
            "--subresource=finalizers",
            &otherf,
        ],
        &["delete", "pods", &otherf],
        &["patch", "pods", &otherf],
        &["create", "events", &otherf],
        &["create", "leases.coordination.k8s.io", &otherf],
        &["delete", "leases.coordination.k8s.io", &nsf],
        &["get", "configmaps", &nsf],
        &["create", "customresourcedefinitions.apiextensions.k8s.io"],
    ];
    for args in allowed {
        assert!(can_i(&c, &kc, args), "the operator cannot {args:?}");
    }
    for args in denied {
        assert!(
            !can_i(&c, &kc, args),
            "the operator may {args:?}, more than it needs"
        );
    }

    // Uninstall removes all of it (the CRDs stay: helm never deletes CRDs).
    ok(
        "helm uninstall of the operator chart",
        helm_on(&c, &["uninstall", release, "-n", &ns]),
    );
    for (kind, name) in &namespaced {
        wait_gone(&c, kind, name, Some(&ns)).await;
    }
    for (kind, name) in &cluster_scoped {
        wait_gone(&c, kind, name, None).await;
    }
    assert!(get_object(&c, "crd", "syncpeers.ragsync.io", None).is_some());
}

#[tokio::test]
async fn two_operator_releases_do_not_collide_on_cluster_scoped_names() {
    let c = cluster().await;
    let ns_a = c.fresh_namespace("helm-collide-a").await;
    let ns_b = c.fresh_namespace("helm-collide-b").await;
    for ns in [&ns_a, &ns_b] {
        ok(
            &format!("helm install into {ns}"),
            helm_on(
                &c,
                &[
                    "install",
                    "twin",
                    OPERATOR_CHART,
                    "-n",
                    ns,
                    "--set",
                    "replicaCount=1",
                ],
            ),
        );
    }
    for ns in [&ns_a, &ns_b] {
        let name = format!("{ns}-twin-rag-sync-operator");
        let crb = get_object(&c, "clusterrolebinding", &name, None)
            .unwrap_or_else(|| panic!("no ClusterRoleBinding {name}"));
        assert_eq!(crb["subjects"][0]["namespace"], ns.as_str());
    }
    for ns in [&ns_a, &ns_b] {
        ok(
            &format!("helm uninstall from {ns}"),
            helm_on(&c, &["uninstall", "twin", "-n", ns]),
        );
    }
    for ns in [&ns_a, &ns_b] {
        wait_gone(
            &c,
            "clusterrole",
            &format!("{ns}-twin-rag-sync-operator"),
            None,
        )
        .await;
    }
}

fn secret_token(c: &TestCluster, ns: &str, name: &str) -> String {
    let secret =
        get_object(c, "secret", name, Some(ns)).unwrap_or_else(|| panic!("no Secret {ns}/{name}"));
    secret["data"]["token"]
        .as_str()
        .expect("data.token")
        .to_string()
}

#[tokio::test]
async fn rag_node_chart_installs_keeps_its_tokens_and_certificate_across_upgrades_and_uninstalls() {
    let c = cluster().await;
    let ns = c.fresh_namespace("helm-rag-node").await;
    let release = "rag";
    ok(
        "helm install of the rag-node chart",
        helm_on(&c, &["install", release, NODE_CHART, "-n", &ns]),
    );
    let sts = get_object(&c, "statefulset", "rag-rag-node", Some(&ns)).expect("StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_hardened(&sts["spec"]["template"]["spec"], "installed StatefulSet");
    let svc = get_object(&c, "service", "rag-rag-node", Some(&ns)).expect("Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let token = secret_token(&c, &ns, "rag-sync-token");
    assert_eq!(decode_base64(&token).len(), 32);
    let admin = secret_token(&c, &ns, "rag-admin-token");
    assert_ne!(admin, token, "two tokens");
    let tls =
        get_object(&c, "secret", "rag-tls", Some(&ns)).expect("the TLS Secret")["data"].clone();
    for k in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(tls[k].is_string(), "{k} in rag-tls");
    }
    let pdb = get_object(&c, "poddisruptionbudget", "rag-rag-node", Some(&ns)).expect("PDB");
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    assert!(get_object(&c, "networkpolicy", "rag-rag-node", Some(&ns)).is_some());

    // An upgrade (here: a value change) keeps the token: the nodes and the operator agree on
    // it without a restart, and the operator's SyncPolicy authSecretRef stays valid.
    ok(
        "helm upgrade of the rag-node chart",
        helm_on(
            &c,
            &[
                "upgrade",
                release,
                NODE_CHART,
                "-n",
                &ns,
                "--set",
                "replicaCount=2",
            ],
        ),
    );
    let sts = get_object(&c, "statefulset", "rag-rag-node", Some(&ns)).expect("StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 2, "the upgrade applied");
    assert_eq!(
        secret_token(&c, &ns, "rag-sync-token"),
        token,
        "helm upgrade changed the sync token"
    );
    // Twice, with --reuse-values, for good measure.
    ok(
        "second helm upgrade",
        helm_on(
            &c,
            &["upgrade", release, NODE_CHART, "-n", &ns, "--reuse-values"],
        ),
    );
    assert_eq!(secret_token(&c, &ns, "rag-sync-token"), token);
    assert_eq!(secret_token(&c, &ns, "rag-admin-token"), admin);
    assert_eq!(
        get_object(&c, "secret", "rag-tls", Some(&ns)).unwrap()["data"],
        tls,
        "helm upgrade re-generated the certificate"
    );

    ok(
        "helm uninstall of the rag-node chart",
        helm_on(&c, &["uninstall", release, "-n", &ns]),
    );
    wait_gone(&c, "statefulset", "rag-rag-node", Some(&ns)).await;
    wait_gone(&c, "service", "rag-rag-node", Some(&ns)).await;
    wait_gone(&c, "secret", "rag-sync-token", Some(&ns)).await;
    wait_gone(&c, "secret", "rag-admin-token", Some(&ns)).await;
    wait_gone(&c, "secret", "rag-tls", Some(&ns)).await;
}
