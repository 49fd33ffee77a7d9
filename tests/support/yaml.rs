//! Kubernetes manifests (rendered charts, examples, `kubectl -o json`) as JSON values, and
//! the queries tests make of them.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;

/// Every non-empty document of a YAML stream.
pub fn parse_yaml_stream(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("bad YAML: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The objects of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one object of `kind` (the test fails unless there is exactly one).
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}, got {found:?}");
    found[0]
}

/// The kinds present.
pub fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// An object's `metadata.name`.
pub fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().expect("metadata.name")
}

/// An array of strings.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// A container's env entry `name`.
pub fn env_of<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name} in {}", container["env"]))
}

/// A container's port number named `name`.
pub fn port_named(container: &Value, name: &str) -> i64 {
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no port {name} in {}", container["ports"]))
}

/// A base64 field (such as a Secret's `data` value) decoded as UTF-8 text, the way the API
/// server decodes it.
pub fn decode_base64(s: &str) -> String {
    let bytes: k8s_openapi::ByteString = serde_json::from_value(Value::String(s.to_string()))
        .unwrap_or_else(|e| panic!("not base64: {s}: {e}"));
    String::from_utf8(bytes.0).expect("UTF-8 token")
}
