//! The Helm charts (`charts/rag-sync-operator`, `charts/rag-node`) without a cluster: lint,
//! the CRD copy, and the rendered output (parsed, not grepped) for default and custom
//! values.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use support::cluster::repo_root;
use support::helm::{assert_hardened, helm, ok, render, values_file, NODE_CHART, OPERATOR_CHART};
use support::rbac::{expected_cluster_permissions, expected_lease_permissions, permissions};
use support::yaml::{decode_base64, env_of, kinds, name, of_kind, one, port_named, strings};

const OPERATOR_CUSTOM_VALUES: &str = r#"
replicaCount: 1
logFormat: text
serviceMonitor:
  enabled: true
  interval: 15s
  labels:
    release: prometheus
networkPolicy:
  enabled: false
resources:
  requests:
    cpu: 200m
    memory: 100Mi
  limits:
    cpu: "2"
    memory: 1Gi
image:
  repository: registry.example.com/rag-sync
  tag: "1.2.3"
  pullPolicy: Always
podLabels:
  team: search
watchNamespace: tenant-a
leaderElection:
  leaseName: custom-lease
  leaseDurationSeconds: 30
grafanaDashboard:
  enabled: true
"#;

const NODE_CUSTOM_VALUES: &str = r#"
replicaCount: 5
token:
  existingSecret: my-token
  key: bearer
adminToken:
  existingSecret: my-admin-token
tls:
  enabled: true
  existingSecret: my-tls
  clientAuth: true
networkPolicy:
  enabled: false
podDisruptionBudget:
  enabled: true
  maxUnavailable: 20%
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: DoNotSchedule
    labelSelector: {matchLabels: {app.kubernetes.io/name: rag-node}}
persistence:
  enabled: false
  size: 2Gi
podLabels:
  region: eu
logFormat: text
resources:
  requests:
    cpu: 250m
    memory: 256Mi
  limits:
    cpu: null # helm drops a default with null: no CPU limit
    memory: 1Gi
"#;

#[test]
fn both_charts_pass_helm_lint_strict_with_default_and_custom_values() {
    for (chart, custom) in [
        (OPERATOR_CHART, OPERATOR_CUSTOM_VALUES),
        (NODE_CHART, NODE_CUSTOM_VALUES),
    ] {
        let out = ok(
            &format!("helm lint --strict {chart}"),
            helm(&["lint", "--strict", chart]),
        );
        assert!(out.contains("0 chart(s) failed"), "{out}");
        assert!(!out.contains("[WARNING]"), "{out}");
        let (_guard, path) = values_file(custom);
        let out = ok(
            &format!("helm lint --strict {chart} --values <custom>"),
            helm(&["lint", "--strict", chart, "--values", &path]),
        );
        assert!(!out.contains("[WARNING]"), "{out}");
    }
}

#[test]
fn chart_crds_are_a_byte_identical_copy_of_the_top_level_crds() {
    let root = repo_root();
    let top = std::fs::read(root.join("crds/ragsync.io.yaml")).expect("crds/ragsync.io.yaml");
    let chart_path = root.join(OPERATOR_CHART).join("crds/ragsync.io.yaml");
    let chart = std::fs::read(&chart_path).expect("chart crds/ragsync.io.yaml");
    assert!(
        top == chart,
        "{} differs from crds/ragsync.io.yaml; copy it: \
         cp crds/ragsync.io.yaml {}",
        chart_path.display(),
        chart_path.display()
    );
    // And the chart's crds/ holds nothing else helm would install.
    let entries: Vec<_> = std::fs::read_dir(root.join(OPERATOR_CHART).join("crds"))
        .expect("chart crds dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("ragsync.io.yaml")]);
}

/// Checks the operator chart's objects common to every values file.
fn check_operator_objects(docs: &[Value], release: &str, ns: &str, watch: Option<&str>) {
    let deploy = one(docs, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_hardened(pod, "operator Deployment");

    // The operator's flags and the downward-API env it needs for leader election.
    let args = strings(&container["args"]);
    assert!(
        args.contains(&"--metrics-addr=0.0.0.0:8080".to_string()),
        "{args:?}"
    );
    assert!(
        args.iter().any(|a| a.starts_with("--lease-name=")),
        "{args:?}"
    );
    assert_eq!(
        env_of(container, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env_of(container, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(port_named(container, "metrics"), 8080);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }

    // It runs as the chart's ServiceAccount, which the RBAC binds.
    let sa = one(docs, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    let sa_subject = json!([{"kind": "ServiceAccount", "name": name(sa), "namespace": ns}]);

    // Watching one namespace, the permissions are a Role there; else a ClusterRole.
    let roles = of_kind(docs, "Role");
    let watched: Vec<_> = roles
        .iter()
        .filter(|r| !name(r).ends_with("-leader-election"))
        .collect();
    let (cr, crb) = match watch {
        None => {
            assert!(watched.is_empty(), "{watched:?}");
            let cr = one(docs, "ClusterRole");
            assert!(
                name(cr).contains(ns) && name(cr).contains(release),
                "cluster-scoped names must carry the namespace and release: {}",
                name(cr)
            );
            (cr, one(docs, "ClusterRoleBinding"))
        }
        Some(w) => {
            assert!(of_kind(docs, "ClusterRole").is_empty(), "no ClusterRole");
            assert!(of_kind(docs, "ClusterRoleBinding").is_empty());
            assert_eq!(watched.len(), 1, "one Role in the watched namespace");
            let cr = *watched[0];
            assert_eq!(cr["metadata"]["namespace"], w);
            let rbs = of_kind(docs, "RoleBinding");
            let crb = *rbs
                .iter()
                .find(|b| name(b) == name(cr))
                .expect("its RoleBinding");
            assert_eq!(crb["metadata"]["namespace"], w);
            (cr, crb)
        }
    };
    assert_eq!(
        permissions(cr),
        expected_cluster_permissions(),
        "the operator's rules"
    );
    assert_eq!(name(crb), name(cr));
    assert_eq!(
        crb["roleRef"]["kind"],
        if watch.is_some() {
            "Role"
        } else {
            "ClusterRole"
        }
    );
    assert_eq!(crb["roleRef"]["name"], name(cr));
    assert_eq!(crb["subjects"], sa_subject);

    let role = *roles
        .iter()
        .find(|r| name(r).ends_with("-leader-election"))
        .expect("the leader election Role");
    assert_eq!(role["metadata"]["namespace"], ns);
    assert_eq!(
        permissions(role),
        expected_lease_permissions(),
        "Role rules"
    );
    let rbs = of_kind(docs, "RoleBinding");
    let rb = *rbs
        .iter()
        .find(|b| name(b) == name(role))
        .expect("the leader election RoleBinding");
    assert_eq!(rb["metadata"]["namespace"], ns);
    assert_eq!(rb["roleRef"]["kind"], "Role");
    assert_eq!(rb["roleRef"]["name"], name(role));
    assert_eq!(rb["subjects"], sa_subject);

    // The metrics Service selects exactly the operator's pods, on the metrics port.
    let svc = one(docs, "Service");
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    assert_eq!(&svc["spec"]["selector"], selector);
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector.as_object().expect("matchLabels") {
        assert_eq!(&pod_labels[k], v, "pod template carries selector label {k}");
    }
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}])
    );

    // Every object is namespaced to the release namespace, except the cluster-scoped RBAC.
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        if kind != "ClusterRole" && kind != "ClusterRoleBinding" {
            assert_eq!(d["metadata"]["namespace"], ns, "{kind} {}", name(d));
        }
    }
}

#[test]
fn operator_chart_renders_its_defaults() {
    let (release, ns) = ("ops", "rag-sync-system");
    let docs = render(OPERATOR_CHART, release, ns, None);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "no ServiceMonitor by default"
    );
    check_operator_objects(&docs, release, ns, None);

    let deploy = one(&docs, "Deployment");
    assert_eq!(
        deploy["spec"]["replicas"], 2,
        "two replicas with leader election"
    );
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    for arg in [
        "--log-format=json",
        "--lease-name=ops-rag-sync-operator",
        "--lease-duration-seconds=15",
    ] {
        assert!(args.contains(&arg.to_string()), "{arg} in {args:?}");
    }
    assert!(
        !container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RAG_SYNC_WATCH_NAMESPACE"),
        "all namespaces by default"
    );
    assert_eq!(
        container["image"], "rag-sync:0.1.0",
        "tag defaults to appVersion"
    );
    for key in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                container["resources"][key][res].is_string(),
                "resources.{key}.{res} is set"
            );
        }
    }

    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    assert_eq!(pdb["spec"]["selector"], deploy["spec"]["selector"]);

    // NetworkPolicy: ingress only to the metrics port; egress to DNS, the API server and the
    // RAG nodes' port, nothing else.
    let np = one(&docs, "NetworkPolicy");
    assert_eq!(np["spec"]["podSelector"], deploy["spec"]["selector"]);
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        np["spec"]["ingress"],
        json!([{"ports": [{"port": "metrics", "protocol": "TCP"}]}])
    );
    let egress = np["spec"]["egress"].as_array().expect("egress");
    let egress_ports: BTreeSet<(i64, String)> = egress
        .iter()
        .flat_map(|rule| rule["ports"].as_array().expect("egress ports").iter())
        .map(|p| {
            (
                p["port"].as_i64().expect("numeric port"),
                p["protocol"].as_str().expect("protocol").to_string(),
            )
        })
        .collect();
    assert_eq!(
        egress_ports,
        BTreeSet::from([
            (53, "UDP".to_string()),
            (53, "TCP".to_string()),
            (443, "TCP".to_string()),
            (6443, "TCP".to_string()),
            (8090, "TCP".to_string()),
        ])
    );
}

#[test]
fn operator_chart_renders_what_custom_values_say() {
    let (release, ns) = ("custom", "tenant-a");
    let docs = render(OPERATOR_CHART, release, ns, Some(OPERATOR_CUSTOM_VALUES));
    check_operator_objects(&docs, release, ns, Some("tenant-a"));

    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 1);
    let pod = &deploy["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "search");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example.com/rag-sync:1.2.3");
    assert_eq!(container["imagePullPolicy"], "Always");
    let args = strings(&container["args"]);
    for arg in [
        "--log-format=text",
        "--lease-name=custom-lease",
        "--lease-duration-seconds=30",
    ] {
        assert!(args.contains(&arg.to_string()), "{arg} in {args:?}");
    }
    assert_eq!(
        env_of(container, "RAG_SYNC_WATCH_NAMESPACE")["value"],
        "tenant-a"
    );
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "200m", "memory": "100Mi", "ephemeral-storage": "16Mi"},
               "limits": {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "64Mi"}})
    );

    assert!(
        of_kind(&docs, "PodDisruptionBudget").is_empty(),
        "no PDB with one replica"
    );
    assert!(
        of_kind(&docs, "NetworkPolicy").is_empty(),
        "networkPolicy.enabled: false"
    );

    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        sm["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}])
    );
    let svc = one(&docs, "Service");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("ServiceMonitor selector")
    {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service"
        );
    }
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"], json!([ns]));

    // Three replicas bring the PDB back; it can also be switched off.
    let docs = render(OPERATOR_CHART, release, ns, Some("replicaCount: 3\n"));
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 3);
    assert_eq!(one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
    let docs = render(
        OPERATOR_CHART,
        release,
        ns,
        Some("replicaCount: 3\npodDisruptionBudget:\n  enabled: false\n"),
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
}

/// The pod template's volume `name`.
fn volume_named(pod: &Value, name: &str) -> Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("a volume {name}"))
}

#[test]
fn rag_node_chart_renders_its_defaults() {
    let (release, ns) = ("rag", "rag");
    let docs = render(NODE_CHART, release, ns, None);
    assert_eq!(
        kinds(&docs),
        [
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "StatefulSet"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    let sts = one(&docs, "StatefulSet");
    let svc = one(&docs, "Service");
    let secrets = of_kind(&docs, "Secret");
    let secret_named = |n: &str| {
        *secrets
            .iter()
            .find(|s| name(s) == n)
            .unwrap_or_else(|| panic!("a Secret {n}"))
    };
    let secret = secret_named("rag-sync-token");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], svc["metadata"]["name"]);
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless Service");
    assert_eq!(
        svc["spec"]["selector"],
        sts["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http", "port": 8090, "targetPort": "http", "protocol": "TCP"}])
    );

    // The labels the examples' SyncPeers select.
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "rag-node");
    assert_eq!(labels["app.kubernetes.io/instance"], release);

    let pod = &sts["spec"]["template"]["spec"];
    assert_hardened(pod, "rag-node StatefulSet");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    assert!(
        args.contains(&"--listen=0.0.0.0:8090".to_string()),
        "{args:?}"
    );
    assert!(args.contains(&"--data-dir=/data".to_string()), "{args:?}");
    assert!(args.contains(&"--log-format=json".to_string()), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--node-id")),
        "node ids are generated and persisted per node: {args:?}"
    );
    assert_eq!(port_named(container, "http"), 8090);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "http", "{probe}");
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }

    // Two tokens: generated Secrets <release>-sync-token and <release>-admin-token, mounted as
    // files (re-read on change), never in the environment.
    for n in ["rag-sync-token", "rag-admin-token"] {
        let token = decode_base64(
            secret_named(n)["data"]["token"]
                .as_str()
                .expect("data.token"),
        );
        assert_eq!(token.len(), 32, "a 32-character token in {n}");
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");
    }
    assert_ne!(
        secret_named("rag-sync-token")["data"],
        secret_named("rag-admin-token")["data"]
    );
    assert!(container["env"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["name"] != "RAG_SYNC_TOKEN"));
    for a in [
        "--token-file=/etc/rag-sync/tokens/sync-token",
        "--admin-token-file=/etc/rag-sync/tokens/admin-token",
        "--tls-cert-file=/etc/rag-sync/tls/tls.crt",
        "--tls-key-file=/etc/rag-sync/tls/tls.key",
        "--peer-ca-file=/etc/rag-sync/tls/ca.crt",
    ] {
        assert!(args.contains(&a.to_string()), "{a} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--tls-client-ca-file")),
        "mutual TLS is opt-in: {args:?}"
    );
    let volume = |n: &str| volume_named(pod, n);
    assert_eq!(
        volume("tokens")["projected"]["sources"],
        json!([
            {"secret": {"name": "rag-sync-token", "items": [{"key": "token", "path": "sync-token"}]}},
            {"secret": {"name": "rag-admin-token", "items": [{"key": "token", "path": "admin-token"}]}}
        ])
    );
    assert_eq!(volume("tls")["secret"]["secretName"], "rag-tls");
    assert_eq!(volume("tmp")["emptyDir"]["sizeLimit"], "64Mi");

    // TLS: a generated CA and a server+client certificate for every pod's DNS name.
    let tls = secret_named("rag-tls");
    assert_eq!(tls["type"], "kubernetes.io/tls");
    for k in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(
            decode_base64(tls["data"][k].as_str().unwrap()).starts_with("-----BEGIN"),
            "{k}"
        );
    }

    // Only the release's nodes and the operator may connect; drains take one node at a time;
    // the nodes spread over hosts.
    let np = one(&docs, "NetworkPolicy");
    let selector = &sts["spec"]["selector"]["matchLabels"];
    assert_eq!(&np["spec"]["podSelector"]["matchLabels"], selector);
    let from = np["spec"]["ingress"][0]["from"].as_array().unwrap();
    assert_eq!(from[0]["podSelector"]["matchLabels"], *selector);
    assert_eq!(
        from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "rag-sync-operator"
    );
    assert_eq!(from.len(), 2, "{from:?}");
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(&spread["labelSelector"]["matchLabels"], selector);

    // The store lives on a PVC per pod, mounted at /data; / is read-only, /tmp an emptyDir.
    let vct = sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates");
    assert_eq!(vct.len(), 1);
    assert_eq!(vct[0]["metadata"]["name"], "data");
    assert_eq!(vct[0]["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(vct[0]["spec"]["resources"]["requests"]["storage"], "1Gi");
    let mounts: BTreeMap<String, String> = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(mounts["/data"], "data");
    assert_eq!(mounts["/tmp"], "tmp");

    // Each render without a cluster generates a fresh token (install keeps it: see below).
    let again = render(NODE_CHART, release, ns, None);
    let again = of_kind(&again, "Secret");
    let again = again.iter().find(|s| name(s) == "rag-sync-token").unwrap();
    assert_ne!(again["data"]["token"], secret["data"]["token"]);
}

#[test]
fn rag_node_chart_renders_what_custom_values_say() {
    let (release, ns) = ("rag-eu", "rag");
    let docs = render(NODE_CHART, release, ns, Some(NODE_CUSTOM_VALUES));
    assert!(
        of_kind(&docs, "Secret").is_empty(),
        "no Secret with existing Secrets for both tokens and TLS"
    );
    assert!(of_kind(&docs, "NetworkPolicy").is_empty());
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], "20%");
    let sts = one(&docs, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 5);
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["region"], "eu");
    assert_eq!(labels["app.kubernetes.io/instance"], release);
    let pod = &sts["spec"]["template"]["spec"];
    assert_hardened(pod, "rag-node StatefulSet (custom)");
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    assert!(args.contains(&"--log-format=text".to_string()));
    assert!(args.contains(&"--tls-client-ca-file=/etc/rag-sync/tls/ca.crt".to_string()));
    let volume = |n: &str| volume_named(pod, n);
    assert_eq!(
        volume("tokens")["projected"]["sources"],
        json!([
            {"secret": {"name": "my-token", "items": [{"key": "bearer", "path": "sync-token"}]}},
            {"secret": {"name": "my-admin-token", "items": [{"key": "token", "path": "admin-token"}]}}
        ])
    );
    assert_eq!(volume("tls")["secret"]["secretName"], "my-tls");
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "128Mi"},
               "limits": {"memory": "1Gi", "ephemeral-storage": "256Mi"}})
    );
    assert!(
        sts["spec"]["volumeClaimTemplates"].is_null(),
        "persistence disabled: no PVCs"
    );
    let data = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "data")
        .expect("a data volume");
    assert_eq!(data["emptyDir"], json!({"sizeLimit": "2Gi"}));

    let docs = render(
        NODE_CHART,
        release,
        ns,
        Some("persistence:\n  enabled: true\n  size: 5Gi\n  storageClassName: fast\n"),
    );
    let vct = &one(&docs, "StatefulSet")["spec"]["volumeClaimTemplates"][0]["spec"];
    assert_eq!(vct["storageClassName"], "fast");
    assert_eq!(vct["resources"]["requests"]["storage"], "5Gi");
}

/// The operator's exposition with every metric in it: a family is encoded only once it has a
/// child, so each gets one; the count below fails until every registered metric shows.
fn operator_exposition() -> String {
    use rag_sync::operator::metrics::OperatorMetrics;
    let m = OperatorMetrics::new();
    let l = OperatorMetrics::labels(&[("policy", "ns/p")]);
    let _ = m.reconciles.get_or_create(&l);
    let _ = m.reconcile_errors.get_or_create(&l);
    let _ = m.member_lag_seconds.get_or_create(&l);
    let _ = m.member_pending.get_or_create(&l);
    let _ = m.policy_max_lag_seconds.get_or_create(&l);
    let _ = m.policy_lagging_edges.get_or_create(&l);
    let _ = m.node_requests.get_or_create(&l);
    let _ = m.reconcile_seconds.get_or_create(&l);
    let _ = m.conflicts.get_or_create(&l);
    let _ = m.status_deferred.get_or_create(&l);
    let text = m.encode();
    assert_registered_all(&text, "src/operator/metrics.rs", "operator_exposition");
    text
}

/// The node's exposition with every metric in it (its families get a child through the calls
/// that feed them).
fn node_exposition() -> String {
    let m = rag_sync::sync::metrics::Metrics::new();
    m.transferred("peer", 1, 1, 1, true);
    m.delivered("peer", 2_000, &[1_000]);
    let text = m.encode();
    assert_registered_all(&text, "src/sync/metrics.rs", "node_exposition");
    text
}

/// As many metrics in `exposition` as `source` registers.
fn assert_registered_all(exposition: &str, source: &str, helper: &str) {
    let code = std::fs::read_to_string(repo_root().join(source)).unwrap();
    let registered = code.matches("registry.register").count();
    let encoded = exposition
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .count();
    assert_eq!(
        encoded, registered,
        "{source} registers {registered} metrics but {encoded} are encoded: give the new \
         families a child in {helper}() (tests/helm_render.rs)\n{exposition}"
    );
}

/// The sample names a Prometheus text exposition can carry, from its `# TYPE` lines:
/// `<name>_total` for a counter, `_bucket`, `_sum` and `_count` for a histogram, the name
/// itself for a gauge.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        out.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    out
}

/// The metric names (every `ragsync_...` identifier) of a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        let ident = &tail[..end];
        if ident.starts_with("ragsync_") {
            out.insert(ident.to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Every panel of a dashboard, rows' nested panels included (rows themselves excluded).
fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_grafana_dashboard_is_opt_in_and_uses_only_metrics_the_code_registers() {
    let (release, ns) = ("ops", "rag-sync-system");
    let docs = render(OPERATOR_CHART, release, ns, None);
    assert!(
        of_kind(&docs, "ConfigMap").is_empty(),
        "no dashboard by default"
    );

    let docs = render(
        OPERATOR_CHART,
        release,
        ns,
        Some("grafanaDashboard:\n  enabled: true\n"),
    );
    let cm = one(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], ns);
    assert_eq!(
        cm["metadata"]["labels"]["grafana_dashboard"], "1",
        "the Grafana sidecar's usual label"
    );
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/instance"],
        release
    );
    let data = cm["data"].as_object().expect("data");
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["rag-sync.json"],
        "one dashboard file"
    );
    let text = data["rag-sync.json"].as_str().unwrap();
    let shipped = std::fs::read_to_string(
        repo_root()
            .join(OPERATOR_CHART)
            .join("dashboards/rag-sync.json"),
    )
    .unwrap();
    assert_eq!(
        text,
        shipped.trim_end(),
        "the chart's dashboards/rag-sync.json, whole"
    );
    let dashboard: Value = serde_json::from_str(text).expect("the dashboard is valid JSON");
    assert_eq!(dashboard["uid"], "rag-sync");
    assert!(dashboard["title"].is_string());

    // Every panel queries the data source variable with at least one expression, and every
    // metric it names is one the operator or the node registers.
    let registered: BTreeSet<String> = sample_names(&operator_exposition())
        .into_iter()
        .chain(sample_names(&node_exposition()))
        .collect();
    assert!(
        registered.contains("ragsync_operator_reconciles_total")
            && registered.contains("ragsync_delivery_latency_seconds_bucket")
            && registered.contains("ragsync_waiting_requests"),
        "the registries' names are read: {registered:?}"
    );
    let panels = dashboard_panels(&dashboard);
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().expect("a panel title");
        assert!(
            ids.insert(p["id"].as_i64().expect("a panel id")),
            "{title}: unique id"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expr");
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{title}: {expr} names no rag-sync metric"
            );
            used.extend(names);
        }
        for key in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        for key in ["definition"] {
            if let Some(q) = v[key].as_str() {
                used.extend(metric_names(q));
            }
        }
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !registered.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses metrics nothing registers: {unknown:?}\nregistered: {registered:?}"
    );
    // What the dashboard is for.
    for name in [
        "ragsync_operator_member_lag_seconds",
        "ragsync_operator_member_pending_changes",
        "ragsync_operator_policy_max_lag_seconds",
        "ragsync_operator_policy_lagging_edges",
        "ragsync_operator_conflicts",
        "ragsync_operator_config_pushes_total",
        "ragsync_operator_reconcile_duration_seconds_bucket",
        "ragsync_delivery_latency_seconds_bucket",
        "ragsync_sync_errors_total",
        "ragsync_conflicts_resolved_total",
        "ragsync_waiting_requests",
    ] {
        assert!(used.contains(name), "a panel over {name}");
    }

    // Labels, annotations and the namespace can be set.
    let docs = render(
        OPERATOR_CHART,
        release,
        ns,
        Some(
            "grafanaDashboard:\n  enabled: true\n  namespace: monitoring\n  labels:\n    grafana_dashboard: \"yes\"\n    team: search\n  annotations:\n    grafana_folder: rag-sync\n",
        ),
    );
    let cm = one(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "yes");
    assert_eq!(cm["metadata"]["labels"]["team"], "search");
    assert_eq!(
        cm["metadata"]["annotations"],
        json!({"grafana_folder": "rag-sync"})
    );
}

#[test]
fn the_metric_name_scanner_finds_every_name() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(ragsync_x_bucket{policy=~\"$p\"}[$__rate_interval]))) / ragsync_y"
        ),
        BTreeSet::from(["ragsync_x_bucket".to_string(), "ragsync_y".to_string()])
    );
    assert_eq!(
        sample_names(
            "# HELP a_b x\n# TYPE a_b counter\n# TYPE h histogram\n# TYPE g gauge\na_b_total 1\n"
        ),
        BTreeSet::from(["a_b_total", "h_bucket", "h_sum", "h_count", "g"].map(String::from))
    );
}
