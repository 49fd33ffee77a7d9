//! The RBAC the operator needs, exactly, as (apiGroup, resource, verb) triples, and the
//! triples a (Cluster)Role's rules grant.

use std::collections::BTreeSet;

use serde_json::Value;

use super::yaml::strings;

pub type Permission = (String, String, String); // (apiGroup, resource, verb)

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

/// What the operator's ClusterRole must grant: its resources, their status and finalizers,
/// the pods it reads, the token Secrets, and events.
pub fn expected_cluster_permissions() -> BTreeSet<Permission> {
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

/// What its Role in the release namespace must grant: the leader-election Lease.
pub fn expected_lease_permissions() -> BTreeSet<Permission> {
    expand(&[(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    )])
}

/// The permissions a (Cluster)Role's rules grant, refusing anything that a plain triple set
/// cannot express (resourceNames, nonResourceURLs, wildcards).
pub fn permissions(role: &Value) -> BTreeSet<Permission> {
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
