//! kube-score (built from its Go module by `hack/test-tools.sh`) over both charts, rendered
//! with their defaults and with the hardened options on: no CRITICAL finding but those
//! allowed below, each with its reason.

mod support;

use std::process::Command;

use support::helm::{helm, NODE_CHART, OPERATOR_CHART};
use support::tools::test_tool;

/// Findings accepted on purpose: (text of the finding, why).
const ALLOWED: &[(&str, &str)] = &[(
    "ImagePullPolicy is not set to Always",
    "releases are immutable tags or digests; Always would make every pod restart depend on the registry",
)];

fn rendered(chart: &str, release: &str, ns: &str, set: &[&str]) -> String {
    let mut args = vec!["template", release, chart, "--namespace", ns];
    for s in set {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template {chart}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The CRITICAL lines of kube-score's CI output for `yaml` that [`ALLOWED`] does not cover.
fn critical(bin: &str, yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(bin)
        .args(["score", "--output-format", "ci"])
        .arg(&file)
        .output()
        .expect("run kube-score");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.lines().any(|l| l.starts_with("[OK]")),
        "kube-score scored nothing:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.starts_with("[CRITICAL]"))
        .filter(|l| !ALLOWED.iter().any(|(finding, _)| l.contains(finding)))
        .map(String::from)
        .collect()
}

#[test]
fn both_charts_have_no_critical_kube_score_findings() {
    let bin = test_tool("kube-score");
    for (chart, release, ns, set) in [
        (NODE_CHART, "rag", "rag", vec![]),
        (NODE_CHART, "rag", "rag", vec!["tls.clientAuth=true"]),
        (OPERATOR_CHART, "rso", "rag-sync-system", vec![]),
        (
            OPERATOR_CHART,
            "rso",
            "rag-sync-system",
            vec!["watchNamespace=rag"],
        ),
    ] {
        let found = critical(&bin, &rendered(chart, release, ns, &set));
        assert!(found.is_empty(), "{chart} {set:?}:\n{}", found.join("\n"));
    }
    // The check itself finds what it must: a container without limits is critical.
    let bare = rendered(NODE_CHART, "rag", "rag", &["resources.limits=null"]);
    assert!(
        !critical(&bin, &bare).is_empty(),
        "kube-score found nothing in a chart without resource limits"
    );
}
