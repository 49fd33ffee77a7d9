//! Prints the `SyncPeer` and `SyncPolicy` CRDs as one multi-document YAML stream; `make crds`
//! writes it to `crds/ragsync.io.yaml`, which `tests/crd_drift.rs` keeps in step with the types.

fn main() {
    print!("{}", rag_sync::operator::crd::crds_yaml());
}
