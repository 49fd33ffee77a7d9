//! The `SyncPeer` and `SyncPolicy` custom resources (`ragsync.io/v1alpha1`).
//!
//! The Rust types are the single source of truth: `crdgen` prints the CRDs from them and a test
//! keeps `crds/ragsync.io.yaml` identical. Invalid specs are refused by the API server itself,
//! so every rule a user can break lives in the schema (bounds, patterns, CEL rules with a
//! message saying what to fix) rather than only in the controller.

mod peer;
mod policy;
mod schemas;
#[cfg(test)]
mod tests;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use peer::{
    MemberStatus, PeerDirection, SyncPeer, SyncPeerSpec, SyncPeerStatus, DEFAULT_NODE_PORT,
};
pub use policy::{
    CaSecretRef, CollectionFilter, EdgeStatus, PolicyTls, SecretKeyRef, SecretRef, SyncPolicy,
    SyncPolicySpec, SyncPolicyStatus, Topology, TopologyEdge, TopologyType, CONFLICT_STRATEGIES,
    DEFAULT_FANOUT, FANOUT_RANGE, MAX_BATCH_SIZE,
};

/// API group of both resources.
pub const GROUP: &str = "ragsync.io";
/// API version of both resources.
pub const VERSION: &str = "v1alpha1";

/// Both CRDs, `SyncPeer` first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![SyncPeer::crd(), SyncPolicy::crd()]
}

/// Both CRDs as one multi-document YAML stream: what `crdgen` prints and `crds/` holds.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CRD serializes to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}
