//! A real `rag-node` whose data directory is a small tmpfs (mounted by the test, as root):
//! a full disk is a 507 `insufficient_storage` naming the directory, never a 5xx fault; the
//! node reports not ready while writes fail and ready once space returns; nothing
//! acknowledged is lost. A corrupt store at start is a clear error and exit status 1.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::node::{wait_for, NodeOptions, TestNode, WAIT};

/// A tmpfs mounted at a path, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(path: &Path, bytes: usize) -> std::io::Result<()> {
    std::fs::write(path, vec![7u8; bytes])
}

#[tokio::test]
async fn a_full_disk_is_507_and_not_ready_until_space_returns() {
    let mut n = TestNode::start("disk-full", 241, NodeOptions::default()).await;
    n.kill9();
    n.wipe();
    let data = n.data_dir.join("data");
    // CI runs as root; elsewhere this test cannot make a small file system and says so.
    let _fs = match Tmpfs::mount(&data, "6m") {
        Ok(fs) => fs,
        Err(e) if !nix_is_root() => {
            eprintln!("skipped: not root, cannot mount a tmpfs: {e}");
            return;
        }
        Err(e) => panic!("cannot mount a tmpfs as root: {e}"),
    };
    n.restart().await;
    n.create_collection("docs", json!({})).await;
    // Leave a little room, then fill it with documents until the node says the disk is full.
    let ballast = data.join("ballast");
    let _ = fill(&ballast, 4 << 20);
    let body = "x".repeat(32 * 1024);
    let mut acked = Vec::new();
    let refusal = loop {
        assert!(acked.len() < 200, "the disk never filled");
        let id = format!("d{}", acked.len());
        let r = n
            .request("PUT", &format!("/collections/docs/documents/{id}"))
            .json(&json!({"content": body}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        match status {
            200 | 201 => acked.push(id),
            _ => break (status, v),
        }
    };
    assert_eq!(refusal.0, 507, "{refusal:?}");
    assert_eq!(refusal.1["error"], "insufficient_storage");
    let message = refusal.1["message"].as_str().unwrap();
    assert!(message.contains(data.to_str().unwrap()), "{message}");

    // Not ready while writes fail; reads still answer; everything acknowledged is there.
    let ready = n
        .request_without_token("GET", "/readyz")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let why: Value = ready.json().await.unwrap();
    assert!(
        why["message"]
            .as_str()
            .is_some_and(|m| m.contains("no space")),
        "{why}"
    );
    assert_eq!(n.documents("docs").await.len(), acked.len());

    // Space returns: ready again, and writes succeed.
    std::fs::remove_file(&ballast).unwrap();
    wait_for("the node to be ready again", WAIT, || async {
        let r = n
            .request_without_token("GET", "/readyz")
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    n.put_doc("docs", "after", "space returned").await;

    // And nothing acknowledged is lost across a restart.
    n.kill9();
    n.restart().await;
    let docs = n.documents("docs").await;
    for id in acked.iter().chain(std::iter::once(&"after".to_string())) {
        assert!(docs.contains_key(id), "{id} was acknowledged and is gone");
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_corrupt_store_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rag.db"),
        b"this is not a SQLite database, it only has its name",
    )
    .unwrap();
    let node = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rag-node"));
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path());
        cmd
    };
    let out = node().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rag-node: error: opening the store"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // With stderr unwritable (a full disk), the same failure is still exit 1, not a panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let status = node()
        .stdout(full.try_clone().unwrap())
        .stderr(full)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}
