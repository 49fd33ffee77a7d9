//! `kubectl ragsync` end to end: the built `kubectl-ragsync` binary against the real control
//! plane, the operator running under the chart's RBAC, and real `rag-node` processes.
//!
//! The nodes listen on 127.0.0.x and their Pod objects carry those IPs. kube-apiserver does
//! not proxy to loopback pod IPs (`GET .../pods/rag-0:PORT/proxy/...` answers 400 "address
//! not allowed"), so the live numbers are read with `--direct`, and the default (proxy) mode
//! is checked to report that refusal per member, and to use the caller's own RBAC (a user
//! without `pods/proxy` is told Forbidden). `proxy_reads_nodes_at_a_routable_pod_ip` (ignored
//! by default: it binds a node on this machine's non-loopback address) reads through the
//! proxy for real.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::{json, Value};
use support::node::{free_port, sync_until_quiet, wait_for, NodeOptions, TestNode};
use support::operator::{condition, Env, TOKEN};

const POLICY: &str = r#"
apiVersion: ragsync.io/v1alpha1
kind: SyncPeer
metadata: {name: hub, labels: {ragsync.io/policy: docs}}
spec:
  selector: {matchLabels: {role: hub}}
  port: PORT
---
apiVersion: ragsync.io/v1alpha1
kind: SyncPeer
metadata: {name: spokes, labels: {ragsync.io/policy: docs}}
spec:
  selector: {matchLabels: {role: spoke}}
  port: PORT
---
apiVersion: ragsync.io/v1alpha1
kind: SyncPolicy
metadata: {name: docs}
spec:
  peerSelector: {matchLabels: {ragsync.io/policy: docs}}
  topology: {type: Mesh}
  interval: 1h
  statusInterval: 1s
  authSecretRef: {name: rag-admin-token, key: token}
"#;

const WAIT: Duration = Duration::from_secs(60);

/// What one run of the plugin gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `kubectl-ragsync --kubeconfig <kubeconfig> -n <ns> <args>` (no `KUBECONFIG`).
async fn plugin(kubeconfig: &Path, ns: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-ragsync"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns])
        .args(args)
        .env_remove("KUBECONFIG");
    run(cmd).await
}

async fn run(mut cmd: Command) -> Run {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl-ragsync"))
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ready(s: &Value) -> bool {
    condition(s, "Ready").is_some_and(|(st, _)| st == "True")
}

/// Three nodes in a mesh over two SyncPeers (hub: rag-0; spokes: rag-1, rag-2), the
/// operator running, all Ready.
async fn mesh(prefix: &str, octets: &[u8]) -> Env {
    let mut env = Env::new(prefix, octets).await;
    env.create_pod(0, json!({"app": "rag", "role": "hub"}))
        .await;
    for i in 1..octets.len() {
        env.create_pod(i, json!({"app": "rag", "role": "spoke"}))
            .await;
    }
    env.apply(POLICY);
    env.start_operator("op").await;
    let n = octets.len();
    env.wait_policy("docs", "Ready with every member", |s| {
        ready(s) && s["readyMembers"] == n
    })
    .await;
    env
}

async fn wait_docs(env: &Env, i: usize, want: usize) {
    wait_for(&format!("{want} documents on node {i}"), WAIT, || async {
        // The collection itself may not have arrived yet.
        let (code, page) = env.nodes[i]
            .call("GET", "/collections/docs/documents?limit=1000", None)
            .await;
        (code == 200 && page["documents"].as_array().map(Vec::len) == Some(want)).then_some(())
    })
    .await
}

/// The edge `from → to` of a status report.
fn edge<'a>(report: &'a Value, from: &str, to: &str) -> &'a Value {
    report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
        .unwrap_or_else(|| panic!("no edge {from} -> {to} in {report:#}"))
}

/// What node `from` says about the edge to node `to` (which pulls from it), computed the way
/// the nodes define it: its `pullers[]` entry for `to`, else its `/admin/backlog` from `to`'s
/// checkpoint.
async fn served(env: &Env, from: usize, to: usize) -> Value {
    let sender = env.nodes[from].status().await;
    let receiver = env.nodes[to].status().await;
    if let Some(p) = sender["pullers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["node_id"] == receiver["node_id"])
    {
        return p["backlog"].clone();
    }
    let entry = receiver["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == env.nodes[from].name)
        .expect("the receiver lists the sender");
    let since = entry["checkpoint"].as_str().unwrap_or("0000000000000000");
    env.nodes[from]
        .ok("GET", &format!("/admin/backlog?since={since}"), None)
        .await
}

async fn triggers(env: &Env) -> f64 {
    env.operator_metric("op", "ragsync_operator_sync_triggers_total")
        .await
}

fn hlc_wall_ms(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap() >> 16
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn status_sync_and_conflicts_read_live_from_the_nodes() {
    let mut env = mesh("plugin", &[151, 152, 153]).await;
    let kc = env.c.kubeconfig.clone();
    let ns = env.ns.clone();

    // 1. A healthy mesh after writes: every member read, six Pull edges with nothing pending,
    //    each matching what its sender reports.
    env.nodes[0].create_collection("docs", json!({})).await;
    for i in 1..3 {
        wait_for(&format!("the collection on node {i}"), WAIT, || async {
            (env.nodes[i].call("GET", "/collections/docs", None).await.0 == 200).then_some(())
        })
        .await;
    }
    for i in 0..3 {
        env.nodes[i]
            .put_doc("docs", &format!("from-{i}"), "hello")
            .await;
    }
    for i in 0..3 {
        wait_docs(&env, i, 3).await;
    }
    // Live pulls do not wake for a change the puller already has (its own, or one relayed
    // from a writer it pulls directly), so a checkpoint can stay behind such entries until
    // the next round; the anti-entropy period is an hour here, so run the rounds now.
    sync_until_quiet(&[&env.nodes[0], &env.nodes[1], &env.nodes[2]]).await;
    let r = plugin(&kc, &ns, &["status", "docs", "--direct", "-o", "json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["policy"], "docs");
    assert_eq!(report["access"], "direct");
    assert_eq!(report["topology"]["type"], "Mesh");
    assert_eq!(report["totals"]["members"], 3);
    let members = report["members"].as_array().unwrap();
    let names: Vec<(&str, &str)> = members
        .iter()
        .map(|m| (m["peer"].as_str().unwrap(), m["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [("hub", "rag-0"), ("spokes", "rag-1"), ("spokes", "rag-2")]
    );
    for (i, m) in members.iter().enumerate() {
        let live = env.nodes[i].status().await;
        assert_eq!(m["node"]["state"], "read", "{m:#}");
        assert_eq!(m["node"]["nodeId"], live["node_id"], "{m:#}");
        assert_eq!(
            m["node"]["watermark"], live["watermark"],
            "the live watermark is the node's"
        );
        assert_eq!(m["node"]["documents"], 3);
        assert_eq!(m["ready"], true);
    }
    let edges = report["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 6, "{report:#}");
    for from in 0..3 {
        for to in (0..3).filter(|t| *t != from) {
            let e = edge(&report, &format!("rag-{from}"), &format!("rag-{to}"));
            assert_eq!(e["mode"], "Pull");
            assert_eq!(e["pendingChanges"], 0, "{e}");
            assert_eq!(e["lagMs"], 0, "{e}");
            assert!(["status", "backlog"].contains(&e["source"].as_str().unwrap()));
            assert_eq!(
                served(&env, from, to).await["pending"],
                0,
                "the sender says so too"
            );
        }
    }
    let table = plugin(&kc, &ns, &["status", "docs", "--direct"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    println!("--- kubectl ragsync status docs --direct\n{}", table.stdout);
    for needle in [
        &format!("SyncPolicy {ns}/docs: Mesh, interval 1h"),
        "Totals: 3 members, 3 ready, max lag 0s",
        "MEMBER  SYNCPEER",
        "Edges (6, worst first",
        "Ready      True",
    ] {
        assert!(
            table.stdout.contains(needle),
            "{needle:?} in\n{}",
            table.stdout
        );
    }

    // 2. `sync` sets the annotation by a merge patch, and the operator runs rounds for it.
    //    Run as kubectl runs a plugin: found on PATH, KUBECONFIG from the environment.
    let before = triggers(&env).await;
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-ragsync"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        env.c.bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut list = Command::new(env.c.kubectl_path());
    list.args(["plugin", "list"]).env("PATH", &path);
    let listed = run(list).await;
    assert!(
        listed.stdout.contains("kubectl-ragsync"),
        "kubectl plugin list finds it:\n{}{}",
        listed.stdout,
        listed.stderr
    );
    let mut cmd = Command::new(env.c.kubectl_path());
    cmd.args(["ragsync", "sync", "docs", "-n", &ns])
        .env("PATH", &path)
        .env("KUBECONFIG", &kc);
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    println!("--- kubectl ragsync sync docs\n{}", r.stdout);
    assert!(
        r.stdout
            .starts_with("syncpolicy.ragsync.io/docs annotated: ragsync.io/sync-now="),
        "{}",
        r.stdout
    );
    let value = r.stdout["syncpolicy.ragsync.io/docs annotated: ragsync.io/sync-now=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let annotation = env.c.kubectl_ok(&[
        "get",
        "syncpolicy",
        "docs",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.annotations.ragsync\\.io/sync-now}",
    ]);
    assert_eq!(annotation, value);
    wait_for(
        "the operator's sync round for the annotation",
        WAIT,
        || async { (triggers(&env).await >= before + 3.0).then_some(()) },
    )
    .await;
    // A second request is a new value, so it asks again.
    let again = plugin(&kc, &ns, &["sync", "docs"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains(&format!("(was {value})")),
        "{}",
        again.stdout
    );

    // 3. Conflicts: with the policy paused the nodes have no peers; the same document written
    //    on two of them conflicts once they sync again, and every member holds the conflict.
    env.policies()
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    for i in 0..3 {
        env.wait_node_peers(i, &[]).await;
    }
    let a = env.nodes[1]
        .put_doc("docs", "contended", "edit on rag-1")
        .await;
    let b = env.nodes[2]
        .put_doc("docs", "contended", "edit on rag-2")
        .await;
    let ((winner, w_node), (loser, l_node)) = {
        let (ka, kb) = (
            (a.hlc.clone(), a.node.clone()),
            (b.hlc.clone(), b.node.clone()),
        );
        if ka > kb {
            (ka, kb)
        } else {
            (kb, ka)
        }
    };
    env.policies()
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    for i in 0..3 {
        wait_for(&format!("the conflict on node {i}"), WAIT, || async {
            let c = env.nodes[i].ok("GET", "/sync/conflicts", None).await;
            c["conflicts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["id"] == "contended" && e["losers"].as_array().unwrap().len() == 1)
                .then_some(())
        })
        .await;
    }
    let r = plugin(&kc, &ns, &["conflicts", "docs", "--direct", "-o", "json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    let rows = report["conflicts"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "deduplicated across the members: {report:#}");
    let row = &rows[0];
    assert_eq!(
        (&row["collection"], &row["kind"], &row["id"]),
        (&json!("docs"), &json!("document"), &json!("contended"))
    );
    assert_eq!(row["members"], json!(["rag-0", "rag-1", "rag-2"]));
    assert_eq!(
        (&row["winner"]["hlc"], &row["winner"]["node"]),
        (&json!(winner), &json!(w_node))
    );
    assert_eq!(row["losers"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&row["losers"][0]["hlc"], &row["losers"][0]["node"]),
        (&json!(loser), &json!(l_node))
    );
    let writer = |node: &str| if node == a.node { "rag-1" } else { "rag-2" };
    assert_eq!(row["winner"]["writer"], writer(&w_node));
    assert_eq!(row["losers"][0]["writer"], writer(&l_node));
    let table = plugin(&kc, &ns, &["conflicts", "docs", "--direct"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    println!(
        "--- kubectl ragsync conflicts docs --direct\n{}",
        table.stdout
    );
    assert!(table.stdout.contains("contended"), "{}", table.stdout);
    assert!(
        table.stdout.contains("rag-0,rag-1,rag-2"),
        "{}",
        table.stdout
    );
    let other = plugin(
        &kc,
        &ns,
        &[
            "conflicts",
            "docs",
            "--direct",
            "--collection",
            "other",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(other.json()["conflicts"], json!([]), "{}", other.stderr);

    // 4. A backlog that stays: with the operator gone, rag-2's pull from rag-0 is pointed at a
    //    dead port. What rag-0 writes next reaches rag-2 through rag-1, but the edge rag-0 →
    //    rag-2 keeps it pending; status shows that edge first, with rag-0's own numbers.
    env.kill_operator("op");
    let mut cfg = env.nodes[2].ok("GET", "/admin/config", None).await;
    let dead = format!(
        "http://{}:{}",
        env.nodes[2].addr.ip(),
        free_port(&env.nodes[2].addr.ip().to_string())
    );
    for p in cfg["peers"].as_array_mut().unwrap() {
        if p["peer_id"] == "rag-0" {
            p["endpoint"] = json!(dead);
        }
    }
    env.nodes[2].ok("PUT", "/admin/config", Some(cfg)).await;
    for i in 0..5 {
        env.nodes[0]
            .put_doc(
                "docs",
                &format!("late-{i}"),
                "written while rag-2 cannot pull rag-0",
            )
            .await;
    }
    wait_docs(&env, 1, 9).await;
    wait_docs(&env, 2, 9).await;
    let t1 = now_ms();
    let r = plugin(&kc, &ns, &["status", "docs", "--direct", "-o", "json"]).await;
    let t2 = now_ms();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    let expected = served(&env, 0, 2).await;
    let pending = expected["pending"].as_u64().unwrap();
    assert!(pending >= 5, "rag-0 reports {expected}");
    let worst = &report["edges"][0];
    assert_eq!(
        (&worst["from"], &worst["to"], &worst["mode"]),
        (&json!("rag-0"), &json!("rag-2"), &json!("Pull")),
        "the lagging edge comes first: {report:#}"
    );
    assert_eq!(worst["pendingChanges"], pending, "{worst} vs {expected}");
    assert_eq!(worst["oldest"], expected["oldest"], "{worst} vs {expected}");
    let oldest_ms = hlc_wall_ms(expected["oldest"].as_str().unwrap());
    let lag = worst["lagMs"].as_u64().unwrap();
    assert!(
        lag + 50 >= t1.saturating_sub(oldest_ms) && lag <= t2 - oldest_ms + 50,
        "lag {lag} ms: the oldest pending change's age when read ({t1}..{t2}, oldest {oldest_ms})"
    );
    for e in report["edges"].as_array().unwrap() {
        let index = |name: &Value| {
            name.as_str().unwrap()["rag-".len()..]
                .parse::<usize>()
                .unwrap()
        };
        let theirs = served(&env, index(&e["from"]), index(&e["to"])).await;
        assert_eq!(e["pendingChanges"], theirs["pending"], "{e} vs {theirs}");
        assert!(
            e["lagMs"].as_u64() <= worst["lagMs"].as_u64(),
            "worst first: {report:#}"
        );
    }
    let table = plugin(&kc, &ns, &["status", "docs", "--direct"]).await;
    println!(
        "--- kubectl ragsync status docs --direct (a lagging edge)\n{}",
        table.stdout
    );
    let first_edge = table
        .stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("FROM"))
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(
        first_edge.trim_start().starts_with("rag-0  rag-2  Pull  ")
            && first_edge.contains(&format!("  {pending}  ")),
        "{}",
        table.stdout
    );
}

/// The RBAC the test grants: the example Roles, and one without `pods/proxy`.
const NO_PROXY_ROLE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ragsync-no-proxy}
rules:
  - apiGroups: [ragsync.io]
    resources: [syncpolicies, syncpeers]
    verbs: [get, list]
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get]
"#;

async fn account(env: &Env, name: &str, role: Option<&str>) -> std::path::PathBuf {
    let kc = env.c.service_account_kubeconfig(&env.ns, name).await;
    if let Some(role) = role {
        env.c.kubectl_ok(&[
            "create",
            "rolebinding",
            &format!("{name}-{role}"),
            "-n",
            &env.ns,
            &format!("--role={role}"),
            &format!("--serviceaccount={}:{name}", env.ns),
        ]);
    }
    kc
}

fn member_errors(report: &Value) -> Vec<String> {
    report["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["node"]["state"], "failed", "{m:#}");
            m["node"]["error"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn the_proxy_path_uses_the_callers_rbac_and_reports_refusals_per_member() {
    let env = mesh("plugin-rbac", &[161, 162]).await;
    let ns = env.ns.clone();
    let examples = support::cluster::repo_root().join("examples/kubectl-plugin/rbac.yaml");
    env.apply(&std::fs::read_to_string(examples).unwrap());
    env.apply(NO_PROXY_ROLE);

    // The admin, through the proxy: the API server refuses the loopback pod IPs, per member,
    // and the command still prints what it has, with exit status 3.
    let r = plugin(&env.c.kubeconfig, &ns, &["status", "docs"]).await;
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    println!(
        "--- kubectl ragsync status docs (proxy, loopback pods)\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Members (") && r.stdout.contains("FAILED"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "rag-0: node not read: GET /api/v1/namespaces/{ns}/pods/rag-0:{}/proxy/admin/status: the API server refused the proxy request (400 Bad Request): address not allowed",
            env.port
        )),
        "{}",
        r.stdout
    );
    let json = plugin(&env.c.kubeconfig, &ns, &["status", "docs", "-o", "json"]).await;
    assert_eq!(json.code, 3);
    let report = json.json();
    assert_eq!(report["access"], "proxy");
    for e in member_errors(&report) {
        assert!(
            e.contains("address not allowed") && e.contains("--direct"),
            "{e}"
        );
    }
    assert_eq!(report["edges"], json!([]), "no node read, no edge known");
    let c = plugin(&env.c.kubeconfig, &ns, &["conflicts", "docs"]).await;
    assert_eq!(c.code, 3, "{}\n{}", c.stdout, c.stderr);
    assert!(c.stdout.contains("address not allowed"), "{}", c.stdout);

    // The kubeconfig's context is honoured.
    let r = plugin(
        &env.c.kubeconfig,
        &ns,
        &["status", "docs", "--context", "no-such-context"],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("error: kubeconfig ") && r.stderr.contains("no-such-context"),
        "{}",
        r.stderr
    );
    let current = env.c.kubectl_ok(&["config", "current-context"]);
    let r = plugin(
        &env.c.kubeconfig,
        &ns,
        &["status", "docs", "--context", current.trim(), "-o", "json"],
    )
    .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.json()["policy"], "docs");

    // No rights at all: a clear Forbidden, exit status 1, for reading and for `sync`.
    let nobody = account(&env, "nobody", None).await;
    for args in [
        &["status", "docs"][..],
        &["sync", "docs"],
        &["conflicts", "docs"],
    ] {
        let r = plugin(&nobody, &ns, args).await;
        assert_eq!(r.code, 1, "{args:?}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        assert!(
            r.stderr.starts_with(&format!(
                "error: cannot read SyncPolicy {ns}/docs: Forbidden (403): "
            )) && r.stderr.contains(&format!(
                "User \"system:serviceaccount:{ns}:nobody\" cannot get resource \"syncpolicies\""
            )) && r.stderr.contains("lack this permission"),
            "{args:?}: {}",
            r.stderr
        );
    }

    // Resources readable but no pods/proxy: every member's read is Forbidden, said so.
    let no_proxy = account(&env, "no-proxy", Some("ragsync-no-proxy")).await;
    let r = plugin(&no_proxy, &ns, &["status", "docs", "-o", "json"]).await;
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["totals"]["members"], 2, "the resources were read");
    let notes = report["notes"].to_string();
    assert!(
        notes.contains(&format!("cannot list pods in {ns}: Forbidden (403)"))
            && notes.contains("the members are those the SyncPeers' status lists"),
        "{notes}"
    );
    assert_eq!(report["members"].as_array().unwrap().len(), 2, "{report:#}");
    for e in member_errors(&report) {
        assert!(
            e.contains("(403 Forbidden)")
                && e.contains("cannot get resource \"pods/proxy\"")
                && e.contains("needs 'get' on pods/proxy"),
            "{e}"
        );
    }

    // The example viewer Role: the proxy call is allowed, and the API server then refuses the
    // loopback address, as for the admin. It may not annotate the policy.
    let viewer = account(&env, "viewer", Some("ragsync-viewer")).await;
    let r = plugin(&viewer, &ns, &["status", "docs", "-o", "json"]).await;
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.json()["notes"],
        json!([
            "edges are derived from the nodes that were read: the pulls of the 2 members not read, and their pushes, are not listed"
        ]),
        "the viewer reads every resource it needs"
    );
    for e in member_errors(&r.json()) {
        assert!(e.contains("address not allowed"), "{e}");
    }
    let r = plugin(&viewer, &ns, &["sync", "docs"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "cannot annotate SyncPolicy {ns}/docs: Forbidden (403)"
        )) && r.stderr.contains("cannot patch resource \"syncpolicies\""),
        "{}",
        r.stderr
    );
    let syncer = account(&env, "syncer", Some("ragsync-syncer")).await;
    let r = plugin(&syncer, &ns, &["sync", "docs"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

/// This machine's address on its default route (no packet is sent: a UDP socket's connect
/// only picks the route), or `RAG_SYNC_TEST_ROUTABLE_IP`.
fn routable_ip() -> String {
    if let Ok(ip) = std::env::var("RAG_SYNC_TEST_ROUTABLE_IP") {
        return ip;
    }
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("203.0.113.1:9").expect(
        "no default route: set RAG_SYNC_TEST_ROUTABLE_IP to a non-loopback address of this machine",
    );
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "{ip} is loopback");
    ip.to_string()
}

/// The proxy path for real: a node listening on this machine's non-loopback address, its Pod
/// carrying that IP, read through the API server (the token in `X-RagSync-Token`, since the
/// API server drops `Authorization`). Ignored by default, because the node listens on an
/// address other machines may reach; run with `cargo test --test plugin -- --ignored`.
#[tokio::test]
#[ignore = "binds rag-node processes on this machine's non-loopback address"]
async fn proxy_reads_nodes_at_a_routable_pod_ip() {
    let mut env = Env::new("plugin-proxy", &[171]).await;
    let ip = routable_ip();
    // Two nodes on the routable address, one per SyncPeer (each SyncPeer has its own port).
    env.nodes.clear();
    let mut ports = Vec::new();
    for i in 0..2 {
        let port = free_port(&ip);
        let mut n = TestNode::start_on(
            &format!("rag-{i}"),
            &format!("{ip}:{port}"),
            NodeOptions {
                token: Some(TOKEN.into()),
                ..Default::default()
            },
        )
        .await;
        n.name = format!("rag-{i}");
        env.nodes.push(n);
        ports.push(port);
    }
    env.create_pod(0, json!({"role": "hub"})).await;
    env.create_pod(1, json!({"role": "spoke"})).await;
    let yaml = POLICY.replacen("port: PORT", &format!("port: {}", ports[0]), 1);
    let yaml = yaml.replacen("port: PORT", &format!("port: {}", ports[1]), 1);
    env.apply(&yaml);
    env.start_operator("op").await;
    env.wait_policy("docs", "Ready", |s| ready(s) && s["readyMembers"] == 2)
        .await;
    env.nodes[0].create_collection("docs", json!({})).await;
    env.nodes[0].put_doc("docs", "d", "hello").await;
    wait_docs(&env, 1, 1).await;
    env.wait_policy("docs", "nothing pending", |s| s["maxLagSeconds"] == 0)
        .await;

    let r = plugin(
        &env.c.kubeconfig,
        &env.ns,
        &["status", "docs", "-o", "json"],
    )
    .await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["access"], "proxy");
    for (i, m) in report["members"].as_array().unwrap().iter().enumerate() {
        assert_eq!(m["node"]["state"], "read", "{report:#}");
        assert_eq!(
            m["node"]["watermark"],
            env.nodes[i].status().await["watermark"]
        );
    }
    for (from, to) in [(0, 1), (1, 0)] {
        let e = edge(&report, &format!("rag-{from}"), &format!("rag-{to}"));
        assert!(
            ["status", "backlog"].contains(&e["source"].as_str().unwrap()),
            "{e}"
        );
        assert_eq!(e["pendingChanges"], served(&env, from, to).await["pending"]);
    }
    let table = plugin(&env.c.kubeconfig, &env.ns, &["status", "docs"]).await;
    println!(
        "--- kubectl ragsync status docs (proxy, routable pod IPs)\n{}",
        table.stdout
    );
    assert_eq!(table.code, 0);
    let c = plugin(&env.c.kubeconfig, &env.ns, &["conflicts", "docs"]).await;
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);
}
