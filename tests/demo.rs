//! `make demo` runs in the test suite too (non-interactively): the script must reach its own
//! end state — every node holds every sample document and the SyncPolicy is Converged — and
//! `down` must stop everything it started.

mod support;

use std::process::Command;

#[tokio::test]
async fn demo_converges_and_stops_cleanly() {
    let c = support::cluster::cluster().await;
    let root = support::cluster::repo_root();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_rag-node"))
        .parent()
        .unwrap()
        .to_path_buf();
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(root.join("hack/demo.sh"))
            .args(args)
            .env("RAG_SYNC_DEMO_BIN_DIR", &bin_dir)
            .env("DEMO_DOCS", "60")
            .env("KUBECONFIG", &c.kubeconfig)
            .output()
            .expect("run hack/demo.sh")
    };
    let up = run(&[]);
    let stdout = String::from_utf8_lossy(&up.stdout);
    let stderr = String::from_utf8_lossy(&up.stderr);
    let down = run(&["down"]);
    assert!(up.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("demo: converged: all 3 nodes hold all 60 documents"),
        "{stdout}"
    );
    assert!(stdout.contains("syncpolicy.ragsync.io/mesh"), "{stdout}");
    assert!(stdout.contains("make demo-down"), "{stdout}");
    assert!(
        down.status.success(),
        "demo down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        !root.join("target/demo").exists(),
        "down removes the demo state"
    );
    let left = c.kubectl_ok(&[
        "get",
        "syncpeers,syncpolicies",
        "-n",
        "rag-demo",
        "-o",
        "name",
    ]);
    assert!(
        left.trim().is_empty(),
        "down deleted the demo resources: {left}"
    );
}
