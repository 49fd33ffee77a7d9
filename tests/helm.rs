mod support;

// The Helm charts (`charts/rag-sync-operator`, `charts/rag-node`) and the `examples/`, checked
// with the cached helm 4 and kubectl and, where it matters, against the real local control
// plane: lint, rendered output (parsed, not grepped), the values schema refusing bad values,
// the CRD copy, install/upgrade/uninstall, the RBAC the operator's ServiceAccount really gets,
// and the examples accepted by the API server.
//
// helm runs with its cache, config and data homes under `target/helm-home/`, so it needs no
// home directory setup on a fresh machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use support::cluster::{cluster, repo_root, TestCluster};
use support::node::wait_for;

const WAIT: Duration = Duration::from_secs(60);
const OPERATOR_CHART: &str = "charts/rag-sync-operator";
const NODE_CHART: &str = "charts/rag-node";

// ---------------------------------------------------------------------------------------------
// helm and kubectl
// ---------------------------------------------------------------------------------------------

/// Where the cached kubectl and helm are: the last stdout line of `hack/k8s-bins.sh` (which
/// builds or unpacks them when missing). No cluster is started for this.
fn bin_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let run = || {
            Command::new("bash")
                .arg("hack/k8s-bins.sh")
                .current_dir(repo_root())
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run hack/k8s-bins.sh: {e}"))
        };
        let mut out = run()?;
        // Exit 141 is SIGPIPE from the script's own version printing (`etcd --version | head
        // -1` under pipefail), not a missing binary: the script is idempotent, so run it again.
        for _ in 0..3 {
            if out.status.code() != Some(141) {
                break;
            }
            out = run()?;
        }
        if !out.status.success() {
            return Err(format!(
                "hack/k8s-bins.sh failed ({}); try `make k8s-bins`:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        if !dir.join("helm").is_file() {
            return Err(format!(
                "hack/k8s-bins.sh printed {}, which has no helm",
                dir.display()
            ));
        }
        Ok(dir)
    });
    match dir {
        Ok(d) => d.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// A helm command with private cache/config/data homes under `target/`, and with the given
/// kubeconfig (or none, for commands that must not touch a cluster).
fn helm_command(kubeconfig: Option<&Path>, args: &[&str]) -> Output {
    let home = repo_root().join("target").join("helm-home");
    let mut cmd = Command::new(bin_dir().join("helm"));
    cmd.current_dir(repo_root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("HELM_NAMESPACE")
        .env_remove("HELM_KUBECONTEXT")
        .stdin(Stdio::null());
    match kubeconfig {
        Some(kc) => {
            cmd.env("KUBECONFIG", kc).arg("--kubeconfig").arg(kc);
        }
        None => {
            cmd.env_remove("KUBECONFIG");
        }
    }
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// helm without a cluster (lint, template).
fn helm(args: &[&str]) -> Output {
    helm_command(None, args)
}

/// helm against the test cluster.
fn helm_on(c: &TestCluster, args: &[&str]) -> Output {
    helm_command(Some(&c.kubeconfig), args)
}

/// A values file in a temporary directory (kept alive by the returned guard).
fn values_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, yaml).expect("write values file");
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// `helm template` of `chart` as release `release` in namespace `ns`, parsed into one JSON
/// value per rendered object.
fn render(chart: &str, release: &str, ns: &str, values: Option<&str>) -> Vec<Value> {
    let guard = values.map(values_file);
    let mut args = vec!["template", release, chart, "--namespace", ns];
    if let Some((_, path)) = &guard {
        args.extend(["--values", path.as_str()]);
    }
    let yaml = ok(&format!("helm {}", args.join(" ")), helm(&args));
    parse_yaml_stream(&yaml)
}

fn parse_yaml_stream(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("bad YAML: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}, got {found:?}");
    found[0]
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().expect("metadata.name")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

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

// ---------------------------------------------------------------------------------------------
// The RBAC the operator needs, exactly
// ---------------------------------------------------------------------------------------------

type Permission = (String, String, String); // (apiGroup, resource, verb)

fn expand(rules: &[(&str, &[&str], &[&str])]) -> BTreeSet<Permission> {
    let mut set = BTreeSet::new();
    for (group, resources, verbs) in rules {
        for r in *resources {
            for v in *verbs {
                set.insert((group.to_string(), r.to_string(), v.to_string()));
            }
        }
    }
    set
}

fn expected_cluster_permissions() -> BTreeSet<Permission> {
    expand(&[
        (
            "ragsync.io",
            &["syncpeers", "syncpolicies"],
            &["get", "list", "watch", "patch", "update"],
        ),
        (
            "ragsync.io",
            &["syncpeers/status", "syncpolicies/status"],
            &["get", "patch", "update"],
        ),
        (
            "ragsync.io",
            &["syncpeers/finalizers", "syncpolicies/finalizers"],
            &["update"],
        ),
        ("", &["pods"], &["get", "list", "watch"]),
        ("", &["secrets"], &["get"]),
        ("events.k8s.io", &["events"], &["create", "patch"]),
    ])
}

fn expected_lease_permissions() -> BTreeSet<Permission> {
    expand(&[(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    )])
}

/// The permissions a (Cluster)Role's rules grant, refusing anything that a plain triple set
/// cannot express (resourceNames, nonResourceURLs, wildcards).
fn permissions(role: &Value) -> BTreeSet<Permission> {
    let mut set = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let keys: BTreeSet<&str> = rule
            .as_object()
            .expect("a rule")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["apiGroups", "resources", "verbs"]),
            "unexpected rule fields in {rule}"
        );
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    assert!(g != "*" && r != "*" && v != "*", "wildcard in rule {rule}");
                    set.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    set
}

// ---------------------------------------------------------------------------------------------
// Lint and the CRD copy
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Rendered output
// ---------------------------------------------------------------------------------------------

fn assert_hardened(pod_spec: &Value, what: &str) {
    let psc = &pod_spec["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}: pod runAsNonRoot");
    assert_eq!(psc["runAsUser"], 65532, "{what}: pod runAsUser");
    assert_eq!(
        psc["seccompProfile"]["type"], "RuntimeDefault",
        "{what}: pod seccompProfile"
    );
    let containers = pod_spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{what}: one container");
    for c in containers {
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{what}: runAsNonRoot");
        assert_eq!(sc["runAsUser"], 65532, "{what}: runAsUser");
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{what}: readOnlyRootFilesystem"
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{what}: allowPrivilegeEscalation"
        );
        assert_eq!(
            sc["capabilities"]["drop"],
            json!(["ALL"]),
            "{what}: drop ALL"
        );
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{what}: no added capabilities"
        );
        assert_eq!(sc["privileged"], false, "{what}: privileged");
        assert_eq!(
            sc["seccompProfile"]["type"], "RuntimeDefault",
            "{what}: seccompProfile"
        );
    }
}

fn env_of<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name} in {}", container["env"]))
}

fn port_named(container: &Value, name: &str) -> i64 {
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no port {name} in {}", container["ports"]))
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

fn decode_base64(s: &str) -> String {
    let k8s_openapi::ByteString(bytes) =
        serde_json::from_value(json!(s)).unwrap_or_else(|e| panic!("not base64: {s}: {e}"));
    String::from_utf8(bytes).expect("UTF-8 token")
}

// ---------------------------------------------------------------------------------------------
// The values schema
// ---------------------------------------------------------------------------------------------

/// Values that break the schema, and what the refusal must mention.
const BAD_VALUES: &[(&str, &[&str])] = &[
    (
        "replicaCount: \"two\"\n",
        &["/replicaCount", "want integer"],
    ),
    ("replicaCount: 0\n", &["/replicaCount", "minimum"]),
    ("replicas: 2\n", &["'replicas'", "not allowed"]),
    ("logFormat: yaml\n", &["/logFormat", "json", "text"]),
    (
        "securityContext:\n  readOnlyRootFileSystem: true\n",
        &[
            "/securityContext",
            "'readOnlyRootFileSystem'",
            "not allowed",
        ],
    ),
    (
        "resources:\n  limits:\n    memory: lots\n",
        &["/resources/limits/memory"],
    ),
    ("image:\n  pullPolicy: Sometimes\n", &["/image/pullPolicy"]),
];

const OPERATOR_BAD_VALUES: &[(&str, &[&str])] = &[
    ("metrics:\n  port: 70000\n", &["/metrics/port", "maximum"]),
    (
        "serviceMonitor:\n  enabled: \"yes\"\n",
        &["/serviceMonitor/enabled", "want boolean"],
    ),
    (
        "networkPolicy:\n  egress:\n    apiServer:\n      cidrs: [\"10.0.0.1\"]\n",
        &["/networkPolicy/egress/apiServer/cidrs/0"],
    ),
];

const NODE_BAD_VALUES: &[(&str, &[&str])] = &[
    ("port: 0\n", &["/port", "minimum"]),
    (
        "token:\n  existingSecret: Not_A_Name\n",
        &["/token/existingSecret"],
    ),
    ("persistence:\n  size: big\n", &["/persistence/size"]),
    ("maxClockDriftMs: -1\n", &["/maxClockDriftMs", "minimum"]),
];

fn assert_refused(out: &Output, what: &str, needles: &[&str]) {
    let msg = text(out);
    assert!(!out.status.success(), "{what} was accepted:\n{msg}");
    assert!(
        msg.contains("values don't meet the specifications of the schema"),
        "{what}: not a schema refusal:\n{msg}"
    );
    for needle in needles {
        assert!(
            msg.contains(needle),
            "{what}: the message lacks {needle:?}:\n{msg}"
        );
    }
}

#[test]
fn values_that_break_the_schema_are_refused_by_template_and_lint() {
    for (chart, specific) in [
        (OPERATOR_CHART, OPERATOR_BAD_VALUES),
        (NODE_CHART, NODE_BAD_VALUES),
    ] {
        for (values, needles) in BAD_VALUES.iter().chain(specific.iter()) {
            let (_guard, path) = values_file(values);
            let what = format!("helm template {chart} with {values:?}");
            assert_refused(
                &helm(&["template", "x", chart, "--values", &path]),
                &what,
                needles,
            );
            let out = helm(&["lint", "--strict", chart, "--values", &path]);
            assert!(
                !out.status.success(),
                "helm lint --strict {chart} accepted {values:?}:\n{}",
                text(&out)
            );
            let msg = text(&out);
            assert!(msg.contains(needles[0]), "lint of {values:?}: {msg}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Against the real control plane
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn helm_install_refuses_bad_values_and_installs_nothing() {
    let c = cluster().await;
    let ns = c.fresh_namespace("helm-bad-values").await;
    let (_guard, path) = values_file("replicaCount: \"two\"\nreplicas: 2\n");
    let out = helm_on(
        &c,
        &[
            "install",
            "bad",
            OPERATOR_CHART,
            "-n",
            &ns,
            "--values",
            &path,
        ],
    );
    assert_refused(
        &out,
        "helm install with bad values",
        &["/replicaCount", "'replicas'"],
    );
    let status = helm_on(&c, &["status", "bad", "-n", &ns]);
    assert!(
        !status.status.success(),
        "a release exists: {}",
        text(&status)
    );
    let deployments = c.kubectl_ok(&["get", "deployments", "-n", &ns, "-o", "name"]);
    assert!(deployments.trim().is_empty(), "{deployments}");
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
async fn rag_node_chart_installs_keeps_its_token_across_upgrades_and_uninstalls() {
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

    ok(
        "helm uninstall of the rag-node chart",
        helm_on(&c, &["uninstall", release, "-n", &ns]),
    );
    wait_gone(&c, "statefulset", "rag-rag-node", Some(&ns)).await;
    wait_gone(&c, "service", "rag-rag-node", Some(&ns)).await;
    wait_gone(&c, "secret", "rag-sync-token", Some(&ns)).await;
}

// ---------------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------------

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
    let secret = one(&chart, "Secret");
    let port = port_named(&sts["spec"]["template"]["spec"]["containers"][0], "http");

    for (dir, policy_count, peer_count) in [("mesh", 1, 1), ("hub-and-spoke", 1, 2)] {
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
            json!({"name": name(secret), "key": "token"}),
            "{dir}: authSecretRef names the chart's Secret"
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
    for dir in ["mesh", "hub-and-spoke"] {
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
