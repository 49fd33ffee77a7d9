//! The committed CRD YAML must be exactly what the Rust types generate: users and the Helm
//! chart install `crds/ragsync.io.yaml`, so a type change without regenerating would ship a
//! schema the operator does not match.

#[test]
fn committed_crds_match_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/ragsync.io.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; run `make crds`", path.display()));
    let generated = rag_sync::operator::crd::crds_yaml();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "{} is out of date with the CRD types (first difference at line {}); run `make crds` and commit the result",
            path.display(),
            line + 1
        );
    }
}
