//! Third-party test tools, built or installed on first use by `hack/test-tools.sh` into a
//! versioned cache outside the repository.

use std::process::Command;

use super::cluster::repo_root;

/// The path of `tool` (`kube-score`, `toxiproxy`, `schemathesis`), installing it first if
/// it is not cached yet.
pub fn test_tool(tool: &str) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("hack/test-tools.sh"))
        .arg(tool)
        .output()
        .expect("run hack/test-tools.sh");
    assert!(
        out.status.success(),
        "hack/test-tools.sh {tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("the tool's path")
        .to_string()
}
