//! Real `rag-node` processes on 127.0.0.x loopback addresses, driven over real HTTP.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a condition may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `f` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// A field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// A free TCP port on `ip` (bound once and released; the node binds it right after).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

/// Options for a node process.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    pub node_id: Option<u16>,
    /// The sync token (in `RAG_SYNC_TOKEN`).
    pub token: Option<String>,
    /// The admin token (in a file, `--admin-token-file`); the test's requests send it.
    pub admin_token: Option<String>,
    /// HTTPS: the node serves `leaf` and trusts `ca` for its peers (and, with `mutual`, for
    /// its clients); the test's requests trust `ca` and present `leaf`.
    pub tls: Option<NodeTls>,
    pub clock_offset_ms: i64,
    pub extra_args: Vec<String>,
}

/// A node's TLS files.
#[derive(Clone, Debug)]
pub struct NodeTls {
    pub leaf: super::pki::Leaf,
    pub ca: PathBuf,
    pub mutual: bool,
    /// The test's own client accepts any certificate (to reach a node its peers refuse).
    pub accept_invalid: bool,
}

impl NodeTls {
    fn args(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        let mut a = vec![
            "--tls-cert-file".into(),
            p(&self.leaf.cert),
            "--tls-key-file".into(),
            p(&self.leaf.key),
            "--peer-ca-file".into(),
            p(&self.ca),
        ];
        if self.mutual {
            a.extend(["--tls-client-ca-file".into(), p(&self.ca)]);
        }
        a
    }

    /// A client that trusts the CA and presents the leaf.
    pub fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(&self.ca).unwrap();
        let mut pem = std::fs::read(&self.leaf.cert).unwrap();
        pem.extend(std::fs::read(&self.leaf.key).unwrap());
        reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .danger_accept_invalid_certs(self.accept_invalid)
            .build()
            .unwrap()
    }
}

/// One `rag-node` process with its own data directory.
pub struct TestNode {
    pub name: String,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub opts: NodeOptions,
    child: Option<Child>,
    http: reqwest::Client,
    _tmp: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts a node on 127.0.0.`octet` and waits until it answers `/readyz`.
    pub async fn start(name: &str, octet: u8, opts: NodeOptions) -> TestNode {
        let ip = format!("127.0.0.{octet}");
        Self::start_on(name, &format!("{ip}:{}", free_port(&ip)), opts).await
    }

    /// Starts a node listening on `addr`.
    pub async fn start_on(name: &str, addr: &str, opts: NodeOptions) -> TestNode {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("rag-node-{name}-"))
            .tempdir()
            .expect("temp dir");
        let addr: SocketAddr = addr.parse().expect("a socket address");
        let http = match &opts.tls {
            Some(tls) => tls.client(),
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let mut node = TestNode {
            name: name.to_string(),
            addr,
            data_dir: tmp.path().to_path_buf(),
            opts,
            child: None,
            http,
            _tmp: Some(tmp),
        };
        node.spawn().await;
        node
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join("node.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rag-node"));
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir.join("data"))
            .arg("--clock-offset-ms")
            .arg(self.opts.clock_offset_ms.to_string())
            .args(&self.opts.extra_args)
            .env(
                "RUST_LOG",
                // Overridable to trace one module in a failing run.
                std::env::var("RAGSYNC_TEST_NODE_LOG")
                    .unwrap_or_else(|_| "info,tower_http=warn".into()),
            )
            .env_remove("RAG_SYNC_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(id) = self.opts.node_id {
            cmd.arg("--node-id").arg(id.to_string());
        }
        if let Some(t) = &self.opts.token {
            cmd.env("RAG_SYNC_TOKEN", t);
        }
        if let Some(t) = &self.opts.admin_token {
            let f = self.data_dir.join("admin-token");
            std::fs::write(&f, t).unwrap();
            cmd.arg("--admin-token-file").arg(f);
        }
        if let Some(tls) = &self.opts.tls {
            cmd.args(tls.args());
        }
        self.child = Some(cmd.spawn().expect("spawn rag-node"));
        let url = format!("{}/readyz", self.url());
        let http = self.http.clone();
        let name = self.name.clone();
        let log_path = self.log_path();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rag-node {name} exited with {status} during start:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < WAIT,
                "rag-node {name} did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.sigterm();
        let mut c = self.child.take().expect("node is running");
        c.wait().expect("wait for rag-node")
    }

    /// Sends SIGTERM and returns at once; [`wait_exit`](Self::wait_exit) sees the exit.
    pub fn sigterm(&self) {
        let pid = self.pid().expect("node is running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("kill -TERM")
            .success();
        assert!(ok, "kill -TERM {pid} failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running then.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            let c = self.child.as_mut().expect("node is running");
            if let Some(status) = c.try_wait().expect("try_wait on rag-node") {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node before restarting it");
        self.spawn().await;
    }

    /// Removes the data directory (the node must be stopped): a wiped peer.
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "stop the node before wiping it");
        std::fs::remove_dir_all(self.data_dir.join("data")).expect("wipe data dir");
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.url(), path));
        // The admin token opens every route.
        match self.opts.admin_token.as_ref().or(self.opts.token.as_ref()) {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// A request to the node, with its token if it has one, for a test to send itself
    /// (e.g. from a spawned task, or to read the response headers).
    pub fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.req(method.parse().unwrap(), path)
    }

    /// A request to the node without any `Authorization` header.
    pub fn request_without_token(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method.parse().unwrap(), format!("{}{}", self.url(), path))
    }

    /// Sends a request; returns status and JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.req(method.parse().unwrap(), path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.name));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// Like [`call`](Self::call) but requires a 2xx.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, json) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} on {} answered {status}: {json}",
            self.name
        );
        json
    }

    pub async fn create_collection(&self, name: &str, settings: Value) -> Value {
        self.ok(
            "PUT",
            &format!("/collections/{name}"),
            Some(json!({ "settings": settings })),
        )
        .await
    }

    /// Writes a document; the returned ack holds its version.
    pub async fn put_doc(&self, collection: &str, id: &str, content: &str) -> Ack {
        let v = self
            .ok(
                "PUT",
                &format!("/collections/{collection}/documents/{id}"),
                Some(json!({"content": content, "metadata": {"writer": self.name}})),
            )
            .await;
        Ack::from_response(collection, id, Some(content), &v)
    }

    pub async fn delete_doc(&self, collection: &str, id: &str) -> Ack {
        let v = self
            .ok(
                "DELETE",
                &format!("/collections/{collection}/documents/{id}"),
                None,
            )
            .await;
        Ack::from_response(collection, id, None, &v)
    }

    /// Replaces the node's peer list: `(peer, direction)`.
    pub async fn set_peers(&self, peers: &[(&TestNode, &str)], batch_size: usize) -> Value {
        self.put_peers(peers, batch_size, true).await
    }

    /// [`Self::set_peers`] with live delivery off: only rounds (the one a configuration
    /// change starts and those the test runs) move data, so writes the test makes between
    /// rounds stay concurrent.
    pub async fn set_round_peers(&self, peers: &[(&TestNode, &str)], batch_size: usize) -> Value {
        self.put_peers(peers, batch_size, false).await
    }

    async fn put_peers(&self, peers: &[(&TestNode, &str)], batch_size: usize, live: bool) -> Value {
        let peers: Vec<Value> = peers
            .iter()
            .map(|(p, dir)| json!({"peer_id": p.name, "endpoint": p.url(), "direction": dir}))
            .collect();
        let config = json!({
            "peers": peers,
            "interval_seconds": 3600,
            "batch_size": batch_size,
            "live": live,
        });
        self.ok("PUT", "/admin/config", Some(config)).await
    }

    /// Waits until the round that a configuration change starts in the background has
    /// tried every configured peer, so that it cannot run later, after writes a test makes
    /// next, and pull them outside the rounds the test starts itself.
    pub async fn wait_first_round(&self) {
        wait_for(
            "the first round after a configuration change",
            WAIT,
            || async {
                let status = self.status().await;
                let peers = status["peers"].as_array().cloned().unwrap_or_default();
                peers
                    .iter()
                    .all(|p| !p["last_attempt_ms"].is_null())
                    .then_some(())
            },
        )
        .await
    }

    /// One sync round with every peer; returns the per-peer stats.
    pub async fn sync(&self) -> Vec<Value> {
        let v = self.ok("POST", "/admin/sync", None).await;
        v["peers"].as_array().cloned().unwrap_or_default()
    }

    pub async fn status(&self) -> Value {
        self.ok("GET", "/admin/status", None).await
    }

    /// Every record of the node's log (live and tombstones, with versions and conflicts),
    /// keyed by `(collection, op-kind, id)`, without the node-local cursors.
    pub async fn dump(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut since = "0000000000000000".to_string();
        loop {
            let page = self
                .ok(
                    "GET",
                    &format!("/sync/changes?since={since}&limit=500"),
                    None,
                )
                .await;
            for c in page["changes"].as_array().unwrap() {
                let mut c = c.clone();
                c.as_object_mut().unwrap().remove("cursor");
                let key = record_key(&c);
                // Insert vs Update depends on the local history; the state does not.
                let op = c["op"]
                    .as_str()
                    .unwrap()
                    .replace("DocumentInsert", "DocumentUpdate");
                c["op"] = json!(op);
                assert!(
                    out.insert(key, c).is_none(),
                    "a record appears twice in the log"
                );
            }
            since = page["watermark"].as_str().unwrap().to_string();
            if !page["has_more"].as_bool().unwrap() {
                return out;
            }
        }
    }

    /// Live document ids of a collection with their content.
    pub async fn documents(&self, collection: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut after = String::new();
        loop {
            let q = if after.is_empty() {
                format!("/collections/{collection}/documents?limit=1000")
            } else {
                format!("/collections/{collection}/documents?limit=1000&after={after}")
            };
            let page = self.ok("GET", &q, None).await;
            for d in page["documents"].as_array().unwrap() {
                out.insert(
                    d["id"].as_str().unwrap().to_string(),
                    d["content"].as_str().unwrap().to_string(),
                );
            }
            match page["next"].as_str() {
                Some(n) => after = n.to_string(),
                None => return out,
            }
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn data_path(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
        // For a post-mortem of a failing or slow run: the log outlives the temp dir.
        if let Ok(dir) = std::env::var("RAGSYNC_TEST_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(
                self.log_path(),
                Path::new(&dir).join(format!("{}.log", self.name)),
            );
        }
    }
}

fn record_key(change: &Value) -> String {
    let coll = change["collection"].as_str().unwrap_or_default();
    match change["op"].as_str().unwrap_or_default() {
        "CollectionCreate" | "CollectionDelete" => format!("{coll}/"),
        "DocumentDelete" => format!("{coll}/{}", change["id"].as_str().unwrap()),
        _ => format!("{coll}/{}", change["document"]["id"].as_str().unwrap()),
    }
}

/// A write that returned 2xx: what must survive.
#[derive(Clone, Debug)]
pub struct Ack {
    pub collection: String,
    pub id: String,
    /// `None` for a delete.
    pub content: Option<String>,
    pub hlc: String,
    pub node: String,
    pub vv: BTreeMap<String, String>,
}

impl Ack {
    fn from_response(collection: &str, id: &str, content: Option<&str>, v: &Value) -> Ack {
        let version = &v["version"];
        Ack {
            collection: collection.to_string(),
            id: id.to_string(),
            content: content.map(str::to_string),
            hlc: version["hlc"].as_str().unwrap().to_string(),
            node: version["node"].as_str().unwrap().to_string(),
            vv: serde_json::from_value(version["vv"].clone()).unwrap(),
        }
    }

    /// Whether `other` was written after this write had been seen (causally later).
    fn overwritten_by(&self, other: &Ack) -> bool {
        other.vv.get(&self.node).is_some_and(|h| *h >= self.hlc)
            && (other.hlc != self.hlc || other.node != self.node)
    }
}

/// Asserts that every node holds identical data (records, versions, tombstones, conflicts).
pub async fn assert_converged(nodes: &[&TestNode]) -> BTreeMap<String, Value> {
    let first = nodes[0].dump().await;
    for n in &nodes[1..] {
        let other = n.dump().await;
        if other != first {
            let mut diff = Vec::new();
            for k in first.keys().chain(other.keys()) {
                if first.get(k) != other.get(k) && diff.len() < 5 {
                    diff.push(format!(
                        "{k}:\n  {}: {:?}\n  {}: {:?}",
                        nodes[0].name,
                        first.get(k),
                        n.name,
                        other.get(k)
                    ));
                }
            }
            panic!(
                "{} and {} differ ({} vs {} records):\n{}",
                nodes[0].name,
                n.name,
                first.len(),
                other.len(),
                diff.join("\n")
            );
        }
    }
    first
}

/// The common dump of `nodes` if every node holds identical data now, else `None`: what
/// [`assert_converged`] checks, for a test that waits for convergence.
pub async fn converged(nodes: &[&TestNode]) -> Option<BTreeMap<String, Value>> {
    let first = nodes[0].dump().await;
    for n in &nodes[1..] {
        if n.dump().await != first {
            return None;
        }
    }
    Some(first)
}

/// Asserts, on a converged dump, that every acknowledged write is present, or recorded as a
/// conflict, or causally overwritten by another acknowledged write that itself satisfies this.
pub fn assert_acks_survive(dump: &BTreeMap<String, Value>, acks: &[Ack]) {
    fn holds(dump: &BTreeMap<String, Value>, acks: &[Ack], a: &Ack, depth: usize) -> bool {
        let Some(rec) = dump.get(&format!("{}/{}", a.collection, a.id)) else {
            return false;
        };
        let v = &rec["version"];
        if v["hlc"] == a.hlc.as_str() && v["node"] == a.node.as_str() {
            let content_ok = match &a.content {
                Some(c) => rec["document"]["content"] == c.as_str(),
                None => rec["op"] == "DocumentDelete",
            };
            return content_ok;
        }
        let in_conflicts = rec["conflicts"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["hlc"] == a.hlc.as_str() && c["node"] == a.node.as_str())
        });
        if in_conflicts {
            return true;
        }
        depth < 64
            && acks.iter().any(|b| {
                b.collection == a.collection
                    && b.id == a.id
                    && a.overwritten_by(b)
                    && holds(dump, acks, b, depth + 1)
            })
    }
    for a in acks {
        assert!(
            holds(dump, acks, a, 0),
            "acknowledged write lost: {a:?}\nrecord now: {:?}",
            dump.get(&format!("{}/{}", a.collection, a.id))
        );
    }
}

/// Runs sync rounds on every node until a full pass changes nothing anywhere.
pub async fn sync_until_quiet(nodes: &[&TestNode]) {
    for _ in 0..10 {
        let mut moved = 0u64;
        for n in nodes {
            for s in n.sync().await {
                moved += s["pulled"].as_u64().unwrap_or(0) + s["pushed"].as_u64().unwrap_or(0);
            }
        }
        if moved == 0 {
            return;
        }
    }
    panic!("sync did not quiesce after 10 passes");
}
