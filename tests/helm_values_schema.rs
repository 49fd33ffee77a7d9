//! The charts' values schemas: values that break them are refused, with a message naming
//! the offending value, by `helm template`, `helm lint --strict` and `helm install` (which
//! then installs nothing on the real control plane).

mod support;

use std::process::Output;

use support::cluster::cluster;
use support::helm::{helm, helm_on, text, values_file, NODE_CHART, OPERATOR_CHART};

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
    (
        "grafanaDashboard:\n  enabled: \"yes\"\n",
        &["/grafanaDashboard/enabled", "want boolean"],
    ),
    (
        "grafanaDashboard:\n  enabled: true\n  labels:\n    grafana_dashboard: 1\n",
        &["/grafanaDashboard/labels/grafana_dashboard", "want string"],
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
