//! A real Kubernetes control plane for integration tests: etcd + kube-apiserver started by
//! `hack/control-plane.sh up` (the envtest way: local processes on 127.0.0.1, real RBAC, real
//! CRD validation, real watches and server-side apply; no kubelet or controllers).
//!
//! The cluster is shared: the first call to [`cluster`] in a test process runs the script
//! (which reuses a running cluster, and serialises concurrent callers from other test binaries
//! with a file lock), later calls reuse the result. Tests isolate themselves with
//! [`TestCluster::fresh_namespace`]. Nothing here stops the cluster: `make cluster-down` does.
//!
//! There are no silent skips: if the binaries are missing or the cluster does not start, every
//! test that asks for it panics with the script's messages (in CI and locally alike).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// What `hack/control-plane.sh up` produced; shared by every test of the process.
#[derive(Debug)]
struct Started {
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
}

static STARTED: OnceLock<Result<Started, String>> = OnceLock::new();

/// The repository root (where `hack/` and `target/` are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The state directory of the shared cluster (`target/cluster/`).
pub fn state_dir() -> PathBuf {
    repo_root().join("target").join("cluster")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn start() -> Result<Started, String> {
    let root = repo_root();
    let script = root.join("hack").join("control-plane.sh");
    let hint = if in_ci() {
        "CI=true: the Kubernetes tests must run, so this is a failure, not a skip"
    } else {
        "build the binaries with `make k8s-bins`, then try `make cluster-up` by hand"
    };
    let out = Command::new("bash")
        .arg(&script)
        .arg("up")
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run `bash {}`: {e} ({hint})", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "the test Kubernetes control plane did not start: `bash hack/control-plane.sh up` \
             exited with {} ({hint}).\n--- its stderr ---\n{stderr}--- its stdout ---\n{stdout}",
            out.status
        ));
    }
    let kubeconfig = stdout
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!("hack/control-plane.sh up printed no `export KUBECONFIG=` line: {stdout}")
        })?;
    let bin_dir_file = state_dir().join("bin-dir");
    let bin_dir = std::fs::read_to_string(&bin_dir_file)
        .map(|s| PathBuf::from(s.trim()))
        .map_err(|e| format!("cannot read {}: {e}", bin_dir_file.display()))?;
    for bin in ["kubectl", "helm", "kube-apiserver", "etcd"] {
        if !bin_dir.join(bin).is_file() {
            return Err(format!(
                "{} is missing ({hint})",
                bin_dir.join(bin).display()
            ));
        }
    }
    if !kubeconfig.is_file() {
        return Err(format!("{} does not exist", kubeconfig.display()));
    }
    Ok(Started {
        kubeconfig,
        bin_dir,
    })
}

/// Handle on the shared test cluster. Cheap to create: one per test.
///
/// The [`Client`] belongs to the tokio runtime of the test that created it (kube's client
/// spawns a task on it), which is why each test calls [`cluster`] itself.
#[derive(Clone)]
pub struct TestCluster {
    /// An admin (`system:masters`) client.
    pub client: Client,
    /// The admin kubeconfig (`target/cluster/kubeconfig`).
    pub kubeconfig: PathBuf,
    /// Where kubectl, helm, etcd and kube-apiserver are.
    pub bin_dir: PathBuf,
}

/// Ensures the shared cluster is up (once per test process) and returns an admin handle.
/// Panics with the script's messages if it cannot be started.
pub async fn cluster() -> TestCluster {
    let started = tokio::task::spawn_blocking(|| {
        STARTED
            .get_or_init(start)
            .as_ref()
            .map(|s| (s.kubeconfig.clone(), s.bin_dir.clone()))
            .map_err(Clone::clone)
    })
    .await
    .expect("the cluster start-up task panicked");
    let (kubeconfig, bin_dir) = match started {
        Ok(v) => v,
        Err(msg) => panic!("{msg}"),
    };
    let client = client_from_kubeconfig(&kubeconfig).await;
    TestCluster {
        client,
        kubeconfig,
        bin_dir,
    }
}

/// A kube client for a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Client {
    let kc = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("cannot read kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("invalid kubeconfig {}: {e}", path.display()));
    Client::try_from(config)
        .unwrap_or_else(|e| panic!("cannot build a client for {}: {e}", path.display()))
}

/// A DNS-1123 label: lowercase alphanumerics and '-', at most 63 characters.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    clean = clean.trim_matches('-').to_string();
    clean.truncate(36);
    if clean.is_empty() {
        clean.push_str("test");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // pid + counter are unique among live test processes; the clock part keeps names unique
    // across runs against the same (long-lived) cluster.
    format!(
        "{}-{:x}{:x}-{:x}",
        clean.trim_end_matches('-'),
        std::process::id(),
        n,
        (nanos as u64) & 0xff_ffff_ffff
    )
}

impl TestCluster {
    pub fn kubectl_path(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    pub fn helm_path(&self) -> PathBuf {
        self.bin_dir.join("helm")
    }

    /// Runs kubectl with the admin kubeconfig; returns its output whatever the exit status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.kubeconfig, args, None)
    }

    /// Runs kubectl with another kubeconfig (e.g. one from
    /// [`TestCluster::service_account_kubeconfig`]) and optional stdin.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        run_with_stdin(
            Command::new(self.kubectl_path())
                .env("KUBECONFIG", kubeconfig)
                .args(args),
            stdin,
        )
    }

    /// Runs kubectl with the admin kubeconfig and panics (with its stderr) unless it succeeds;
    /// returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        expect_success("kubectl", args, self.kubectl(args))
    }

    /// `kubectl apply -f -` of a YAML document with the admin kubeconfig; panics on failure.
    pub fn kubectl_apply(&self, yaml: &str) -> String {
        let args = ["apply", "-f", "-"];
        expect_success(
            "kubectl",
            &args,
            self.kubectl_as(&self.kubeconfig, &args, Some(yaml)),
        )
    }

    /// Runs helm with the admin kubeconfig; returns its output whatever the exit status.
    pub fn helm(&self, args: &[&str]) -> Output {
        run_with_stdin(
            Command::new(self.helm_path())
                .env("KUBECONFIG", &self.kubeconfig)
                .args(args),
            None,
        )
    }

    /// Creates a namespace with a unique name starting with `prefix` and returns its name.
    ///
    /// There is no namespace controller in this cluster, so a deleted namespace would stay
    /// `Terminating` forever: tests just leave theirs (they are small).
    pub async fn fresh_namespace(&self, prefix: &str) -> String {
        let api: Api<Namespace> = Api::all(self.client.clone());
        for _ in 0..5 {
            let name = unique_name(prefix);
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(
                        [("rag-sync.test/harness".to_string(), "true".to_string())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => return name,
                Err(kube::Error::Api(s)) if s.is_already_exists() => continue,
                Err(e) => panic!("cannot create namespace {name}: {e}"),
            }
        }
        panic!("could not find a free namespace name for prefix {prefix:?}")
    }

    /// Creates (if needed) the ServiceAccount `namespace/name`, mints a one-hour token for it
    /// with the TokenRequest API and writes a kubeconfig that authenticates with that token.
    /// Returns the kubeconfig's path (under `target/cluster/service-accounts/`). The account
    /// has exactly the permissions that RBAC objects grant it: none until a binding exists.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => panic!("cannot create ServiceAccount {namespace}/{name}: {e}"),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name} failed: {e}"))
            .status
            .unwrap_or_else(|| panic!("TokenRequest for {namespace}/{name} has no status"))
            .token;

        let admin = Kubeconfig::read_from(&self.kubeconfig).expect("admin kubeconfig");
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .expect("admin kubeconfig has a cluster");
        let server = cluster.server.as_deref().expect("cluster server");
        let ca = cluster
            .certificate_authority_data
            .as_deref()
            .expect("cluster certificate-authority-data");
        let ctx = format!("{namespace}-{name}");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: rag-sync-local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
             users:\n- name: {ctx}\n  user:\n    token: {token}\n\
             contexts:\n- name: {ctx}\n  context:\n    cluster: rag-sync-local\n    user: {ctx}\n    namespace: {namespace}\n\
             current-context: {ctx}\n"
        );
        let dir = state_dir().join("service-accounts");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{namespace}.{name}.kubeconfig"));
        write_private(&path, &yaml);
        path
    }
}

fn write_private(path: &Path, contents: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    f.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to {program}'s stdin: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {program} failed: {e}"))
}

fn expect_success(program: &str, args: &[&str], out: Output) -> String {
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
