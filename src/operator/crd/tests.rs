//! The generated CRDs: structural, complete, and with every rule where it applies.

use std::time;

use serde_json::{json, Value};

use super::policy::DURATION_SYNTAX;
use super::*;
use crate::config::{self, ConflictStrategy};
use crate::hlc::Hlc;

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let v = serde_json::to_value(crd).unwrap();
    v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Walks a schema and fails on anything kube-apiserver refuses in a structural schema.
fn assert_structural(path: &str, v: &Value) {
    let Some(obj) = v.as_object() else { return };
    for bad in [
        "$ref",
        "$schema",
        "definitions",
        "$defs",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
    ] {
        assert!(!obj.contains_key(bad), "{path} has '{bad}'");
    }
    if obj.get("x-kubernetes-int-or-string") != Some(&json!(true))
        && obj.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))
    {
        let ty = obj.get("type");
        assert!(
            ty.is_some_and(Value::is_string),
            "{path} needs a single type, has {ty:?}"
        );
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            assert_structural(&format!("{path}.{k}"), p);
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(&format!("{path}[]"), items);
    }
    if let Some(ap) = obj.get("additionalProperties") {
        assert_structural(&format!("{path}{{}}"), ap);
    }
    // list-type map keys must be required (or defaulted) scalar properties of the items
    if obj.get("x-kubernetes-list-type") == Some(&json!("map")) {
        let items = &obj["items"];
        for key in obj["x-kubernetes-list-map-keys"].as_array().unwrap() {
            let key = key.as_str().unwrap();
            assert!(
                items["required"].as_array().unwrap().contains(&json!(key)),
                "{path}: list map key {key} must be required"
            );
        }
    }
    if obj.get("x-kubernetes-list-type") == Some(&json!("set")) {
        assert_ne!(
            obj["items"]["type"],
            json!("object"),
            "{path}: set of objects"
        );
    }
}

fn find<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for p in path {
        cur = if *p == "[]" {
            &cur["items"]
        } else {
            &cur["properties"][*p]
        };
    }
    cur
}

/// Every CEL rule in a schema, as (rule, message).
fn all_rules(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if v.get("x-kubernetes-validations").is_some() {
        out.extend(rules_at(v));
    }
    for key in ["properties", "additionalProperties", "items"] {
        match v.get(key) {
            Some(Value::Object(o)) if key == "properties" => {
                o.values().for_each(|p| out.extend(all_rules(p)))
            }
            Some(sub) => out.extend(all_rules(sub)),
            None => {}
        }
    }
    out
}

fn rules_at(v: &Value) -> Vec<(String, String)> {
    v["x-kubernetes-validations"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules in {v}"))
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn schemas_are_structural() {
    for crd in crds() {
        assert_structural("", &schema_of(&crd));
    }
}

#[test]
fn crd_names_scope_and_subresources() {
    let peer = SyncPeer::crd();
    assert_eq!(peer.metadata.name.as_deref(), Some("syncpeers.ragsync.io"));
    assert_eq!(peer.spec.scope, "Namespaced");
    assert_eq!(peer.spec.names.short_names, Some(vec!["speer".to_string()]));
    let policy = SyncPolicy::crd();
    assert_eq!(
        policy.metadata.name.as_deref(),
        Some("syncpolicies.ragsync.io")
    );
    assert_eq!(
        policy.spec.names.short_names,
        Some(vec!["spol".to_string()])
    );
    for crd in [peer, policy] {
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, VERSION);
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        assert!(v.served && v.storage);
    }
}

#[test]
fn printer_columns_answer_is_it_healthy() {
    let names = |crd: CustomResourceDefinition| -> Vec<String> {
        crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(
        names(SyncPeer::crd()),
        [
            "Members",
            "Ready",
            "Watermark",
            "Lag",
            "Conflicts",
            "Status",
            "Age"
        ]
    );
    assert_eq!(
        names(SyncPolicy::crd()),
        [
            "Topology",
            "Members",
            "Ready",
            "MaxLag",
            "Conflicts",
            "Converged",
            "Age"
        ]
    );
    // every status column points at a field that exists in the schema
    for crd in crds() {
        let schema = schema_of(&crd);
        for col in crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap()
        {
            let path = col.json_path.split('[').next().unwrap();
            let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
            if parts[0] == "metadata" {
                continue;
            }
            let field = find(&schema, &parts);
            assert!(
                field.is_object(),
                "{}: column {} -> {path}",
                crd.spec.names.kind,
                col.name
            );
        }
    }
}

#[test]
fn conditions_are_a_map_keyed_by_type() {
    for crd in crds() {
        let c = find(&schema_of(&crd), &["status", "conditions"]).clone();
        assert_eq!(c["x-kubernetes-list-type"], json!("map"));
        assert_eq!(c["x-kubernetes-list-map-keys"], json!(["type"]));
    }
}

#[test]
fn rules_sit_where_they_apply() {
    let peer = schema_of(&SyncPeer::crd());
    assert_eq!(rules_at(find(&peer, &["spec"])).len(), 3);
    assert_eq!(rules_at(find(&peer, &["spec", "endpoint"])).len(), 1);
    assert_eq!(find(&peer, &["spec", "endpoint"])["maxLength"], json!(2048));
    assert_eq!(find(&peer, &["spec", "port"])["maximum"], json!(65535.0));
    assert_eq!(
        find(&peer, &["spec", "direction"])["default"],
        json!("Both")
    );

    let pol = schema_of(&SyncPolicy::crd());
    let spec = find(&pol, &["spec"]);
    assert_eq!(rules_at(spec).len(), 1);
    assert_eq!(rules_at(find(spec, &["topology"])).len(), 5);
    assert_eq!(rules_at(find(spec, &["topology", "edges", "[]"])).len(), 1);
    for f in ["interval", "statusInterval", "maxClockDrift"] {
        assert_eq!(rules_at(find(spec, &[f])).len(), 1, "{f}");
    }
    assert_eq!(find(spec, &["interval"])["default"], json!("30s"));
    assert_eq!(find(spec, &["statusInterval"])["default"], json!("15s"));
    assert_eq!(find(spec, &["maxClockDrift"])["default"], json!("500ms"));
    assert_eq!(find(spec, &["batchSize"])["default"], json!(1000));
    assert_eq!(find(spec, &["batchSize"])["minimum"], json!(1.0));
    assert_eq!(find(spec, &["batchSize"])["maximum"], json!(10000.0));
    assert_eq!(
        find(spec, &["conflictStrategy"])["default"],
        json!("LastWriterWins")
    );
    assert_eq!(find(spec, &["topology", "type"])["default"], json!("Mesh"));
    assert_eq!(
        spec["required"],
        json!(["peerSelector"]),
        "only peerSelector is required"
    );
    // every message tells what to fix, not just what is wrong
    let all: Vec<_> = [&peer, &pol].into_iter().flat_map(all_rules).collect();
    assert_eq!(all.len(), 4 + 1 + 5 + 1 + 3, "{all:?}");
    for (rule, msg) in &all {
        assert!(!rule.is_empty() && msg.len() > 20, "{rule}: {msg}");
    }
}

#[test]
fn fanout_is_bounded_and_only_for_sparse() {
    let pol = schema_of(&SyncPolicy::crd());
    let topology = find(&pol, &["spec", "topology"]);
    let fanout = find(topology, &["fanout"]);
    assert_eq!(fanout["type"], json!("integer"));
    assert_eq!(fanout["minimum"], json!(2.0));
    assert_eq!(fanout["maximum"], json!(16.0));
    assert_eq!(
        (*FANOUT_RANGE.start(), *FANOUT_RANGE.end()),
        (2, 16),
        "the schema's bounds"
    );
    // No schema default: a default would put fanout on every Mesh and trip the rule below.
    assert!(fanout.get("default").is_none());
    let rules = rules_at(topology);
    let (rule, msg) = rules
        .iter()
        .find(|(r, _)| r.contains("self.fanout"))
        .expect("a fanout rule");
    assert_eq!(
        rule,
        "!has(self.fanout) || (has(self.type) && self.type == 'Sparse')"
    );
    assert_eq!(
        msg,
        "topology.fanout is used only with topology.type Sparse; remove it or set type: Sparse"
    );
    // The same message is what the API server answers (tests/operator.rs checks it there).
    let fixture =
        include_str!("../../../tests/fixtures/bad-manifests/policy-fanout-with-mesh.yaml");
    assert!(fixture.starts_with(&format!("# expect: {}", &msg[..msg.find(';').unwrap()])));
    let column = SyncPolicy::crd().spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap()
        .into_iter()
        .find(|c| c.name == "Topology")
        .unwrap();
    assert_eq!(
        column.description.as_deref(),
        Some("Mesh, Sparse, HubAndSpoke, Ring or Explicit")
    );

    let spec: SyncPolicySpec = serde_json::from_value(
        json!({"peerSelector": {}, "topology": {"type": "Sparse", "fanout": 5}}),
    )
    .unwrap();
    assert_eq!(spec.topology.type_, TopologyType::Sparse);
    assert_eq!(spec.topology.fanout(), 5);
    let spec: SyncPolicySpec =
        serde_json::from_value(json!({"peerSelector": {}, "topology": {"type": "Sparse"}}))
            .unwrap();
    assert_eq!(spec.topology.fanout(), DEFAULT_FANOUT as usize);
    // Absent stays absent when written back (a Mesh never gets a fanout).
    assert_eq!(
        serde_json::to_value(&spec.topology).unwrap(),
        json!({"type": "Sparse"})
    );
}

#[test]
fn conflict_strategy_names_match_the_node() {
    // An exhaustive match: adding a strategy to the node fails here until the CRD lists it.
    fn name(s: ConflictStrategy) -> &'static str {
        match s {
            ConflictStrategy::LastWriterWins => "LastWriterWins",
            ConflictStrategy::PreferLocal => "PreferLocal",
            ConflictStrategy::PreferRemote => "PreferRemote",
            ConflictStrategy::Merge => "Merge",
        }
    }
    for n in CONFLICT_STRATEGIES {
        let s: ConflictStrategy = serde_json::from_value(json!(n)).unwrap();
        assert_eq!(name(s), n);
        assert_eq!(serde_json::to_value(s).unwrap(), json!(n));
    }
}

#[test]
fn design_example_round_trips_with_defaults() {
    let peer: SyncPeer = serde_yaml::from_str(
        r#"
apiVersion: ragsync.io/v1alpha1
kind: SyncPeer
metadata: {name: rag-eu, labels: {ragsync.io/policy: docs}}
spec:
  selector: {matchLabels: {app: rag, region: eu}}
  port: 8090
  collections: [docs]
  direction: Both
"#,
    )
    .unwrap();
    assert_eq!(peer.spec.effective_port(), 8090);
    assert!(!peer.spec.is_external());
    assert_eq!(peer.spec.direction.to_config(), config::Direction::Both);

    let policy: SyncPolicy = serde_yaml::from_str(
        r#"
apiVersion: ragsync.io/v1alpha1
kind: SyncPolicy
metadata: {name: docs}
spec:
  peerSelector: {matchLabels: {ragsync.io/policy: docs}}
  topology:
    type: HubAndSpoke
    hubs: [rag-eu]
  interval: 30s
  batchSize: 1000
  conflictStrategy: LastWriterWins
  collections: {include: [], exclude: []}
  paused: false
  authSecretRef: {name: rag-sync-token, key: token}
  maxClockDrift: 500ms
  statusInterval: 15s
"#,
    )
    .unwrap();
    assert_eq!(policy.spec.topology.type_, TopologyType::HubAndSpoke);
    assert_eq!(policy.spec.interval(), time::Duration::from_secs(30));
    assert_eq!(
        policy.spec.max_clock_drift(),
        time::Duration::from_millis(500)
    );

    let base = policy.spec.base_config(None).unwrap();
    assert_eq!((base.interval_seconds, base.batch_size), (30, 1000));
    assert!(base.peers.is_empty());

    let minimal: SyncPolicySpec = serde_json::from_value(json!({"peerSelector": {}})).unwrap();
    assert_eq!(minimal.topology.type_, TopologyType::Mesh);
    assert_eq!(minimal.batch_size, 1000);
    assert_eq!(minimal.status_interval(), time::Duration::from_secs(15));
    assert_eq!(minimal.conflict_strategy, ConflictStrategy::LastWriterWins);
    let odd = SyncPolicySpec {
        interval: "1.5s".parse().unwrap(),
        conflict_strategy: ConflictStrategy::PreferRemote,
        ..minimal.clone()
    };
    let base = odd.base_config(Some(Hlc(7))).unwrap();
    assert_eq!(base.interval_seconds, 2, "rounded up");
    assert_eq!(base.conflict_strategy, ConflictStrategy::PreferRemote);
    assert_eq!(base.gc_horizon, Some(Hlc(7)));
    let bad = SyncPolicySpec {
        batch_size: 0,
        ..minimal.clone()
    };
    assert!(bad.base_config(None).unwrap_err().contains("batch_size"));
    let ext: SyncPeerSpec =
        serde_json::from_value(json!({"endpoint": "https://rag.us.example.com:8090"})).unwrap();
    assert!(ext.is_external());
    assert_eq!(ext.direction, PeerDirection::Both);
}

#[test]
fn status_serializes_camel_case() {
    let s = SyncPeerStatus {
        members: vec![MemberStatus {
            pod: "rag-0".into(),
            pending_changes: 3,
            ..Default::default()
        }],
        ready_members: 1,
        ..Default::default()
    };
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["readyMembers"], json!(1));
    assert_eq!(v["members"][0]["pendingChanges"], json!(3));
    assert_eq!(v["lagSeconds"], json!(0));
}

#[test]
fn durations_parse_like_go() {
    // Every syntax the CRD's rule admits (`<number><unit>...`), read as Go reads it.
    let ok = [
        ("30s", 30_000),
        ("1m30s", 90_000),
        ("500ms", 500),
        ("1.5s", 1_500),
        ("2h", 7_200_000),
        ("1h1m1s", 3_661_000),
        ("1000us", 1),
        ("0s", 0),
    ];
    for (s, ms) in ok {
        let spec: SyncPolicySpec =
            serde_json::from_value(json!({"peerSelector": {}, "maxClockDrift": s})).unwrap();
        assert_eq!(spec.max_clock_drift().as_millis(), ms, "{s}");
    }
    // Go also reads "", "-1s", ".5s" and "1.s"; the CRD's rule refuses them.
    for bad in ["30", "s", "1d", "1 s", "1.5.5s", "30S"] {
        let spec = json!({"peerSelector": {}, "interval": bad});
        assert!(
            serde_json::from_value::<SyncPolicySpec>(spec).is_err(),
            "{bad} parsed"
        );
    }
}

#[test]
fn duration_fields_share_one_syntax_rule() {
    let pol = schema_of(&SyncPolicy::crd());
    for f in ["interval", "statusInterval", "maxClockDrift"] {
        let rules = rules_at(find(&pol, &["spec", f]));
        assert!(rules[0].0.starts_with(DURATION_SYNTAX), "{f}: {rules:?}");
    }
}
