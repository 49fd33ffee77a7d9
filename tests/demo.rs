//! `make demo` runs in the test suite too (non-interactively): the script must reach its own
//! end state — every node holds every sample document over HTTPS and the SyncPolicy is
//! Converged — and `down` must stop everything it started and nothing else. The test runs
//! its instances with the DEMO_* overrides (own state, namespaces, releases, addresses), so
//! a demo someone runs on this machine is never touched.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::cluster::TestCluster;

/// One isolated demo instance.
struct Demo {
    state: PathBuf,
    ns: String,
    octets: [u8; 3],
    port: u16,
    release: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// A failed test still stops its instance's processes (they run in their own session).
impl Drop for Demo {
    fn drop(&mut self) {
        if self.state.exists() {
            let _ = self.command(&["down"]).output();
        }
    }
}

impl Demo {
    fn new(c: &TestCluster, tag: &str, octets: [u8; 3]) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let suffix: u32 = rand::random::<u32>() % 100_000;
        Demo {
            state: dir.path().join("demo"),
            ns: format!("demo-{tag}-{suffix}"),
            octets,
            port: support::operator::common_port(&octets),
            release: format!("rag{tag}"),
            kubeconfig: c.kubeconfig.clone(),
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run hack/demo.sh")
    }

    fn command(&self, args: &[&str]) -> Command {
        let root = support::cluster::repo_root();
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_rag-node")).parent().unwrap();
        let ips: Vec<String> = self.octets.iter().map(|o| format!("127.0.0.{o}")).collect();
        let mut cmd = Command::new("bash");
        cmd.arg(root.join("hack/demo.sh"))
            .args(args)
            .env("RAG_SYNC_DEMO_BIN_DIR", bin_dir)
            .env("DEMO_DOCS", "40")
            .env("DEMO_STATE", &self.state)
            .env("DEMO_NAMESPACE", &self.ns)
            .env("DEMO_OPERATOR_NAMESPACE", format!("{}-op", self.ns))
            .env("DEMO_OPERATOR_RELEASE", format!("{}-op", self.release))
            .env("DEMO_RELEASE", &self.release)
            .env("DEMO_IPS", ips.join(" "))
            .env("DEMO_PORT", self.port.to_string())
            .env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Creates the instance's namespaces with the test suite's label, so that `make test`
    /// removes them afterwards (the demo's `down` keeps its namespaces, as a user expects).
    fn create_namespaces(&self, c: &TestCluster) {
        for ns in [self.ns.clone(), format!("{}-op", self.ns)] {
            c.kubectl_apply(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{rag-sync.test/harness: \"true\"}}}}\n"
            ));
        }
    }

    fn resources(&self, c: &TestCluster) -> String {
        c.kubectl_ok(&[
            "get",
            "syncpeers,syncpolicies",
            "-n",
            &self.ns,
            "-o",
            "name",
        ])
    }

    /// Whether node `i` answers `/readyz` over HTTPS with the demo's CA.
    async fn node_ready(&self, i: usize) -> bool {
        let Ok(ca) = std::fs::read(self.state.join("node-ca.crt")) else {
            return false;
        };
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let url = format!("https://127.0.0.{}:{}/readyz", self.octets[i], self.port);
        client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

fn ok(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn demo_converges_over_tls_and_down_stops_only_its_own_instance() {
    let c = support::cluster::cluster().await;
    // Someone's demo, already running.
    let theirs = Demo::new(&c, "a", [74, 75, 76]);
    theirs.create_namespaces(&c);
    let up = theirs.run(&[]);
    let stdout = ok("their demo", &up);
    assert!(
        stdout.contains("demo: converged: all 3 nodes hold all 40 documents"),
        "{stdout}"
    );
    assert!(stdout.contains("syncpolicy.ragsync.io/mesh"), "{stdout}");
    assert!(stdout.contains("make demo-down"), "{stdout}");
    assert!(theirs.node_ready(0).await, "their node answers over HTTPS");

    // Ours: up and down, on its own addresses, namespaces and releases.
    let ours = Demo::new(&c, "b", [77, 78, 79]);
    ours.create_namespaces(&c);
    let up = ours.run(&[]);
    let down = ours.run(&["down"]);
    let stdout = ok("our demo", &up);
    assert!(
        stdout.contains("demo: converged: all 3 nodes hold all 40 documents"),
        "{stdout}"
    );
    ok("our demo down", &down);
    assert!(!ours.state.exists(), "down removes the demo state");
    let left = ours.resources(&c);
    assert!(left.trim().is_empty(), "down deleted our resources: {left}");
    assert!(!ours.node_ready(0).await, "our nodes are stopped");

    // Theirs is untouched.
    for i in 0..3 {
        assert!(theirs.node_ready(i).await, "their node {i} still runs");
    }
    assert!(
        theirs.resources(&c).contains("syncpolicy.ragsync.io/mesh"),
        "their resources are still there"
    );
    ok("their demo down", &theirs.run(&["down"]));
    assert!(!theirs.state.exists());
    assert!(theirs.resources(&c).trim().is_empty());
}
