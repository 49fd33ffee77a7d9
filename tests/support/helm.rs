//! The Helm charts as tests use them: the cached helm binary with private homes under
//! `target/helm-home/` (so it needs no home directory setup on a fresh machine), run without
//! a cluster or against the test cluster, and charts rendered into parsed objects.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::cluster::{repo_root, TestCluster};
use super::yaml::parse_yaml_stream;

pub const OPERATOR_CHART: &str = "charts/rag-sync-operator";
pub const NODE_CHART: &str = "charts/rag-node";

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

/// A command's stderr then stdout, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// The stdout of a command that must have succeeded (else the test fails with `what` and
/// both streams).
pub fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// helm without a cluster (lint, template).
pub fn helm(args: &[&str]) -> Output {
    helm_command(None, args)
}

/// helm against the test cluster.
pub fn helm_on(c: &TestCluster, args: &[&str]) -> Output {
    helm_command(Some(&c.kubeconfig), args)
}

/// A values file in a temporary directory (kept alive by the returned guard).
pub fn values_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, yaml).expect("write values file");
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

/// `helm template` of `chart` as release `release` in namespace `ns`, parsed into one JSON
/// value per rendered object.
pub fn render(chart: &str, release: &str, ns: &str, values: Option<&str>) -> Vec<Value> {
    let guard = values.map(values_file);
    let mut args = vec!["template", release, chart, "--namespace", ns];
    if let Some((_, path)) = &guard {
        args.extend(["--values", path.as_str()]);
    }
    let yaml = ok(&format!("helm {}", args.join(" ")), helm(&args));
    parse_yaml_stream(&yaml)
}

/// The hardening both charts promise for their pods: non-root, read-only root, no
/// privilege escalation, no capabilities, the runtime's seccomp profile.
pub fn assert_hardened(pod_spec: &Value, what: &str) {
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
