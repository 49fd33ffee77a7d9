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
"#;

const NODE_CUSTOM_VALUES: &str = r#"
replicaCount: 5
token:
  existingSecret: my-token
  key: bearer
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
fn check_operator_objects(docs: &[Value], release: &str, ns: &str) {
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

    let cr = one(docs, "ClusterRole");
    assert_eq!(
        permissions(cr),
        expected_cluster_permissions(),
        "ClusterRole rules"
    );
    assert!(
        name(cr).contains(ns) && name(cr).contains(release),
        "cluster-scoped names must carry the namespace and release: {}",
        name(cr)
    );
    let crb = one(docs, "ClusterRoleBinding");
    assert_eq!(name(crb), name(cr));
    assert_eq!(crb["roleRef"]["kind"], "ClusterRole");
    assert_eq!(crb["roleRef"]["name"], name(cr));
    assert_eq!(crb["subjects"], sa_subject);

    let role = one(docs, "Role");
    assert_eq!(role["metadata"]["namespace"], ns);
    assert_eq!(
        permissions(role),
        expected_lease_permissions(),
        "Role rules"
    );
    let rb = one(docs, "RoleBinding");
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
    check_operator_objects(&docs, release, ns);

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
    check_operator_objects(&docs, release, ns);

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
        json!({"requests": {"cpu": "200m", "memory": "100Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}})
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

#[test]
fn rag_node_chart_renders_its_defaults() {
    let (release, ns) = ("rag", "rag");
    let docs = render(NODE_CHART, release, ns, None);
    assert_eq!(
        kinds(&docs),
        ["Secret", "Service", "StatefulSet"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let sts = one(&docs, "StatefulSet");
    let svc = one(&docs, "Service");
    let secret = one(&docs, "Secret");
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
    }

    // The token: a generated Secret named <release>-sync-token, fed to RAG_SYNC_TOKEN.
    assert_eq!(name(secret), "rag-sync-token");
    let token_b64 = secret["data"]["token"].as_str().expect("data.token");
    let token = decode_base64(token_b64);
    assert_eq!(token.len(), 32, "a 32-character token");
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");
    assert_eq!(
        env_of(container, "RAG_SYNC_TOKEN")["valueFrom"]["secretKeyRef"],
        json!({"name": "rag-sync-token", "key": "token"})
    );

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
    assert_ne!(
        one(&again, "Secret")["data"]["token"],
        secret["data"]["token"]
    );
}

#[test]
fn rag_node_chart_renders_what_custom_values_say() {
    let (release, ns) = ("rag-eu", "rag");
    let docs = render(NODE_CHART, release, ns, Some(NODE_CUSTOM_VALUES));
    assert!(
        of_kind(&docs, "Secret").is_empty(),
        "no Secret with token.existingSecret"
    );
    let sts = one(&docs, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 5);
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["region"], "eu");
    assert_eq!(labels["app.kubernetes.io/instance"], release);
    let pod = &sts["spec"]["template"]["spec"];
    assert_hardened(pod, "rag-node StatefulSet (custom)");
    let container = &pod["containers"][0];
    assert_eq!(
        env_of(container, "RAG_SYNC_TOKEN")["valueFrom"]["secretKeyRef"],
        json!({"name": "my-token", "key": "bearer"})
    );
    assert!(strings(&container["args"]).contains(&"--log-format=text".to_string()));
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}})
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
    assert_eq!(data["emptyDir"], json!({}));

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
