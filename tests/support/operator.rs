//! End-to-end environment for the operator: a fresh namespace on the real control plane,
//! the CRDs, the Helm chart's ServiceAccount and RBAC (and nothing more), a token Secret,
//! real `rag-node` processes on loopback with Pod objects whose status the test fills in as a
//! kubelet would, and `rag-sync-operator` processes running under that ServiceAccount.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rag_sync::operator::crd::{SyncPeer, SyncPolicy};
use serde_json::{json, Value};

use super::cluster::{cluster, TestCluster};
use super::node::{free_port, wait_for, NodeOptions, NodeTls, TestNode, WAIT};
use super::pki::Validity;

pub const TOKEN: &str = "e2e-sync-token-0123456789";
/// The nodes' admin token in a TLS environment (Secret `rag-admin-token`, key `token`).
pub const ADMIN_TOKEN: &str = "e2e-admin-token-9876543210";

/// Applies the committed CRDs (cluster-scoped, shared by all tests; idempotent).
pub fn apply_crds(c: &TestCluster) {
    let path = super::cluster::repo_root().join("crds/ragsync.io.yaml");
    let out = c.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "applying CRDs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/syncpeers.ragsync.io",
        "crd/syncpolicies.ragsync.io",
    ]);
    assert!(
        out.status.success(),
        "CRDs established: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Env {
    pub c: TestCluster,
    pub ns: String,
    /// Kubeconfig of the chart's ServiceAccount.
    pub operator_kubeconfig: PathBuf,
    pub port: u16,
    pub nodes: Vec<TestNode>,
    operators: Vec<(String, Child, u16)>,
    /// The operators' logs: removed with the `Env`, kept (and named) when a test fails.
    logs: Option<tempfile::TempDir>,
    /// The CA of a TLS environment, whose directory lives as long as the `Env`.
    pub ca: Option<(super::pki::Ca, tempfile::TempDir)>,
}

/// A port free on every one of `octets` (all members of a SyncPeer share one port).
pub fn common_port(octets: &[u8]) -> u16 {
    for _ in 0..200 {
        let p = free_port(&format!("127.0.0.{}", octets[0]));
        if octets[1..]
            .iter()
            .all(|o| std::net::TcpListener::bind((format!("127.0.0.{o}").as_str(), p)).is_ok())
        {
            return p;
        }
    }
    panic!("no common free port");
}

impl Env {
    /// Namespace, CRDs, the chart's RBAC, the token Secret, and one node per octet.
    pub async fn new(prefix: &str, octets: &[u8]) -> Env {
        Self::build(prefix, octets, false).await
    }

    /// As [`Env::new`], with nodes that serve HTTPS with mutual TLS (certificates for
    /// `rag-<i>.rag.<ns>.svc` from a test CA) and require the admin token for `/admin/*`;
    /// Secrets `rag-sync-ca` (`ca.crt`), `rag-sync-operator-tls` (the operator's client
    /// certificate) and the admin token in `rag-admin-token`.
    pub async fn new_tls(prefix: &str, octets: &[u8]) -> Env {
        Self::build(prefix, octets, true).await
    }

    async fn build(prefix: &str, octets: &[u8], tls: bool) -> Env {
        let c = cluster().await;
        apply_crds(&c);
        let ns = c.fresh_namespace(prefix).await;
        // The ServiceAccount and RBAC exactly as the chart ships them.
        let chart = super::cluster::repo_root().join("charts/rag-sync-operator");
        let out = c.helm(&[
            "template",
            "rso",
            chart.to_str().unwrap(),
            "--namespace",
            &ns,
            "--set",
            &format!("fullnameOverride=rso-{ns}"),
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ]);
        assert!(
            out.status.success(),
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8(out.stdout).unwrap();
        let sa = serde_yaml::Deserializer::from_str(&rendered)
            .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
            .find(|d| d["kind"] == "ServiceAccount")
            .and_then(|d| d["metadata"]["name"].as_str().map(str::to_string))
            .expect("the chart renders a ServiceAccount");
        c.kubectl_apply(&rendered);
        let operator_kubeconfig = c.service_account_kubeconfig(&ns, &sa).await;
        c.kubectl_apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: rag-sync-token, namespace: {ns}}}\nstringData: {{token: {TOKEN}}}\n"
        ));
        // What a SyncPolicy's authSecretRef names: the admin token where the nodes have one,
        // else the sync token (which then opens /admin/* too).
        let admin = if tls { ADMIN_TOKEN } else { TOKEN };
        c.kubectl_apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: rag-admin-token, namespace: {ns}}}\nstringData: {{token: {admin}}}\n"
        ));
        let ca = tls.then(|| {
            let dir = tempfile::tempdir().unwrap();
            let ca = super::pki::Ca::new(dir.path(), "e2e");
            let op = ca.leaf("operator", &[], &["rag-sync-operator"], Validity::Current);
            let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
            let secret = |name: &str, type_: &str, data: Value| {
                json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
                       "metadata": {"name": name, "namespace": ns}, "stringData": data})
                .to_string()
            };
            c.kubectl_apply(&secret(
                "rag-sync-ca",
                "Opaque",
                json!({"ca.crt": read(&ca.ca_file)}),
            ));
            c.kubectl_apply(&secret(
                "rag-sync-operator-tls",
                "kubernetes.io/tls",
                json!({"tls.crt": read(&op.cert), "tls.key": read(&op.key)}),
            ));
            (ca, dir)
        });
        let port = common_port(octets);
        let mut nodes = Vec::new();
        for (i, o) in octets.iter().enumerate() {
            let tls = ca.as_ref().map(|(ca, _)| NodeTls {
                leaf: ca.leaf(
                    &format!("rag-{i}"),
                    &[format!("127.0.0.{o}").parse().unwrap()],
                    &[&format!("rag-{i}.rag.{ns}.svc")],
                    Validity::Current,
                ),
                ca: ca.ca_file.clone(),
                mutual: true,
                accept_invalid: false,
            });
            let mut n = TestNode::start_on(
                &format!("rag-{i}"),
                &format!("127.0.0.{o}:{port}"),
                NodeOptions {
                    token: Some(TOKEN.into()),
                    admin_token: tls.is_some().then(|| ADMIN_TOKEN.into()),
                    tls,
                    ..Default::default()
                },
            )
            .await;
            n.name = format!("rag-{i}");
            nodes.push(n);
        }
        Env {
            c,
            ns,
            operator_kubeconfig,
            port,
            nodes,
            operators: Vec::new(),
            logs: Some(tempfile::tempdir().expect("a directory for operator logs")),
            ca,
        }
    }

    pub fn client(&self) -> Client {
        self.c.client.clone()
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client(), &self.ns)
    }

    pub fn peers(&self) -> Api<SyncPeer> {
        Api::namespaced(self.client(), &self.ns)
    }

    pub fn policies(&self) -> Api<SyncPolicy> {
        Api::namespaced(self.client(), &self.ns)
    }

    /// Creates the Pod object for node `i` with `labels` and marks it Ready with the node's
    /// loopback IP, as a kubelet would.
    pub async fn create_pod(&self, i: usize, labels: Value) {
        let name = self.nodes[i].name.clone();
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            // As a StatefulSet names its pods behind the headless Service `rag`.
            "spec": {"hostname": name, "subdomain": "rag",
                     "containers": [{"name": "rag-node", "image": "rag-sync:test"}]}
        }))
        .unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        self.set_pod_ready(i, true).await;
    }

    pub async fn set_pod_ready(&self, i: usize, ready: bool) {
        let ip = self.nodes[i].addr.ip().to_string();
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }});
        self.pods()
            .patch_status(
                &self.nodes[i].name,
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
    }

    pub fn apply(&self, yaml: &str) {
        let yaml = yaml
            .replace("NAMESPACE", &self.ns)
            .replace("PORT", &self.port.to_string());
        let out = self.c.kubectl_as(
            &self.c.kubeconfig,
            &["apply", "-n", &self.ns, "-f", "-"],
            Some(&yaml),
        );
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts an operator process under the chart's ServiceAccount; returns its metrics port.
    pub async fn start_operator(&mut self, identity: &str) -> u16 {
        self.start_operator_logging(identity, "info,kube=warn")
            .await
    }

    /// [`Self::start_operator`] with `RUST_LOG=filter` (`RAGSYNC_TEST_OPERATOR_LOG` wins).
    pub async fn start_operator_logging(&mut self, identity: &str, filter: &str) -> u16 {
        let port = free_port("127.0.0.1");
        let log = std::fs::File::create(self.log_path(identity)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rag-sync-operator"))
            .args([
                "--namespace",
                &self.ns,
                "--lease-namespace",
                &self.ns,
                "--identity",
                identity,
            ])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--lease-duration-seconds",
                "6",
            ])
            .env("KUBECONFIG", &self.operator_kubeconfig)
            .env(
                "RUST_LOG",
                // Overridable like the nodes' (`rag_sync::operator::controller=debug` logs
                // every pass with its phases).
                std::env::var("RAGSYNC_TEST_OPERATOR_LOG").unwrap_or_else(|_| filter.into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn rag-sync-operator");
        self.operators.push((identity.to_string(), child, port));
        let url = format!("http://127.0.0.1:{port}/healthz");
        let start = Instant::now();
        while reqwest::get(&url).await.is_err() {
            assert!(start.elapsed() < WAIT, "operator {identity} did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        port
    }

    pub fn operator_log(&self, identity: &str) -> String {
        std::fs::read_to_string(self.log_path(identity)).unwrap_or_default()
    }

    fn log_path(&self, identity: &str) -> PathBuf {
        let dir = self
            .logs
            .as_ref()
            .expect("the log directory lives as long as the Env");
        dir.path().join(format!("{identity}.log"))
    }

    /// SIGKILL one operator.
    pub fn kill_operator(&mut self, identity: &str) {
        if let Some(pos) = self.operators.iter().position(|(i, _, _)| i == identity) {
            let (_, mut child, _) = self.operators.remove(pos);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `name=resourceVersion` of every SyncPeer and SyncPolicy: unchanged means no writes.
    pub fn resource_versions(&self) -> String {
        self.c.kubectl_ok(&[
            "get",
            "syncpeers,syncpolicies",
            "-n",
            &self.ns,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}",
        ])
    }

    /// The metrics port of a running operator.
    pub fn operator_port(&self, identity: &str) -> u16 {
        self.operators
            .iter()
            .find(|(i, _, _)| i == identity)
            .map(|(_, _, p)| *p)
            .expect("operator running")
    }

    /// The PID of a running operator.
    pub fn operator_pid(&self, identity: &str) -> Option<u32> {
        self.operators
            .iter()
            .find(|(i, _, _)| i == identity)
            .map(|(_, c, _)| c.id())
    }

    pub async fn operator_metric(&self, identity: &str, name: &str) -> f64 {
        let port = self.operator_port(identity);
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn policy_status(&self, name: &str) -> Value {
        let p = self.policies().get(name).await.unwrap();
        serde_json::to_value(p.status).unwrap_or(Value::Null)
    }

    pub async fn peer_status(&self, name: &str) -> Value {
        let p = self.peers().get(name).await.unwrap();
        serde_json::to_value(p.status).unwrap_or(Value::Null)
    }

    /// Waits until `check` holds on the policy's status.
    pub async fn wait_policy(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let s = self.policy_status(name).await;
            if check(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for policy {name}: {what}\nstatus: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The peer ids in node `i`'s current config.
    pub async fn node_peers(&self, i: usize) -> Vec<String> {
        let cfg = self.nodes[i].ok("GET", "/admin/config", None).await;
        let mut v: Vec<String> = cfg["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    pub async fn wait_node_peers(&self, i: usize, want: &[&str]) {
        let start = Instant::now();
        loop {
            let got = self.node_peers(i).await;
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "node {i} peers {got:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn events(&self) -> String {
        self.c
            .kubectl_ok(&["get", "events.events.k8s.io", "-n", &self.ns, "-o", "json"])
    }

    /// Waits until an event with `reason` is in the namespace (the operator publishes events
    /// off its reconcile path, so they may follow the change they tell of).
    pub async fn wait_event(&self, reason: &str) {
        wait_for(&format!("a {reason} event"), WAIT, || async {
            self.events().contains(reason).then_some(())
        })
        .await
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.operators {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Beside the nodes' logs when asked to keep them (see `Node`'s drop).
        if let (Ok(keep), Some(dir)) = (std::env::var("RAGSYNC_TEST_KEEP_LOGS"), &self.logs) {
            let _ = std::fs::create_dir_all(&keep);
            for entry in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::copy(entry.path(), Path::new(&keep).join(entry.file_name()));
            }
        }
        if std::thread::panicking() {
            if let Some(dir) = self.logs.take() {
                eprintln!(
                    "operator logs of {} kept in {}",
                    self.ns,
                    dir.keep().display()
                );
            }
        }
    }
}

use serde::Deserialize;

/// Condition `type_` of a status, as `(status, reason)`.
pub fn condition(status: &Value, type_: &str) -> Option<(String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}
