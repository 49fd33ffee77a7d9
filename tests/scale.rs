//! The operator at scale against the real control plane: one `Sparse` policy over N real
//! `rag-node` processes as N pods, a real operator process under the chart's RBAC. N is
//! `RAGSYNC_SCALE_MEMBERS` (40 in `make test`); `make bench-scale` runs 200 members with
//! 1,000 SyncPeers over 50 policies (`RAGSYNC_SCALE_EXTRA_POLICIES=49`) and the figures this
//! prints are the scale benchmark's.
//!
//! What it asserts holds at any size: the policy converges, a write reaches every member by
//! live delivery alone, both statuses stay under 64 KiB, and a quiet policy costs no API
//! writes, no config PUTs and at most one node call per member per status round. The times
//! and memory are printed, not asserted (they are figures, not pass/fail).

mod support;

#[path = "../src/bin/rag-bench/feeds.rs"]
mod feeds;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use rag_sync::operator::crd::SyncPeer;
use serde_json::{json, Value};
use support::node::{proc_status_kib, wait_for};
use support::operator::{condition, Env, TOKEN};

/// SyncPeers of the policy under test (the members are spread over them).
const GROUPS: usize = 20;
/// SyncPeers of each extra policy (they select no pods: they are there to be watched).
const EXTRA_PEERS: usize = 20;
/// Writes whose delivery to every member is timed (one at a time).
const WRITES: usize = 20;
/// Largest status object accepted.
const STATUS_LIMIT: usize = 64 * 1024;
/// How long the whole policy may take to converge.
const CONVERGE: Duration = Duration::from_secs(120);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The smallest bucket bound with a fraction `q` of the observations of `histogram` at or
/// below it, over the series whose labels include `label` (e.g. `policy="ns/big"`), counting
/// only what was observed after the metrics text `since` (empty: the whole run).
fn histogram_quantile(metrics: &str, since: &str, histogram: &str, label: &str, q: f64) -> f64 {
    let before = buckets(since, histogram, label);
    let buckets: Vec<(f64, f64)> = buckets(metrics, histogram, label)
        .into_iter()
        .map(|(le, c)| {
            let earlier = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, c - earlier)
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map_or(0.0, |b| b.0)
}

/// A pass's `total=` from the operator's phase log line, seconds.
fn pass_seconds(line: &str) -> Option<f64> {
    let rest = &line[line.find("total=")? + "total=".len()..];
    rest.split(['s', ' ']).next()?.parse().ok()
}

/// For a write that did not reach every feed: whether each node whose feed lacks one of
/// `ids` holds it (a feed that stopped, or a lost delivery), and what it knows of its peers.
async fn delivery_post_mortem(env: &Env, watch: &feeds::Feeds, ids: &[&str]) {
    for (i, seen) in watch.arrivals().iter().enumerate() {
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !seen.contains_key(*id))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let docs = env.nodes[i].documents(feeds::COLLECTION).await;
        let held: Vec<&str> = missing
            .iter()
            .copied()
            .filter(|id| docs.contains_key(*id))
            .collect();
        eprintln!(
            "node {i} ({}): feed lacks {missing:?}; the node holds {held:?}; its status: {:#}",
            env.nodes[i].name,
            env.nodes[i].status().await
        );
    }
}

/// A histogram's cumulative `(bound, count)` buckets.
fn buckets(metrics: &str, histogram: &str, label: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{histogram}_bucket{{le=\"");
    metrics
        .lines()
        .filter(|l| l.contains(label))
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once('"')?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

async fn operator_metrics(env: &Env) -> String {
    reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        env.operator_port("op-scale")
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap()
}

fn peak_rss_mib(pid: u32) -> f64 {
    proc_status_kib(pid, "VmHWM").map_or(0.0, |kib| kib as f64 / 1024.0)
}

fn manifests(groups: usize, extra: usize) -> String {
    let mut yaml = String::new();
    for g in 0..groups {
        yaml.push_str(&format!(
            "apiVersion: ragsync.io/v1alpha1\nkind: SyncPeer\nmetadata: {{name: g{g}, labels: {{ragsync.io/policy: big}}}}\nspec:\n  selector: {{matchLabels: {{group: g{g}}}}}\n  port: PORT\n---\n"
        ));
    }
    for p in 0..extra {
        for k in 0..EXTRA_PEERS {
            yaml.push_str(&format!(
                "apiVersion: ragsync.io/v1alpha1\nkind: SyncPeer\nmetadata: {{name: x{p}-{k}, labels: {{ragsync.io/policy: x{p}}}}}\nspec:\n  selector: {{matchLabels: {{group: none-{p}-{k}}}}}\n  port: PORT\n---\n"
            ));
        }
        yaml.push_str(&format!(
            "apiVersion: ragsync.io/v1alpha1\nkind: SyncPolicy\nmetadata: {{name: x{p}}}\nspec:\n  peerSelector: {{matchLabels: {{ragsync.io/policy: x{p}}}}}\n  statusInterval: 2s\n---\n"
        ));
    }
    yaml
}

const POLICY: &str = r#"
apiVersion: ragsync.io/v1alpha1
kind: SyncPolicy
metadata: {name: big}
spec:
  peerSelector: {matchLabels: {ragsync.io/policy: big}}
  topology: {type: Sparse, fanout: 3}
  interval: 30s
  statusInterval: 2s
  authSecretRef: {name: rag-sync-token, key: token}
"#;

/// Waits until every node's config lists at least one peer; polls only the nodes still
/// without, every 100 ms, a few at a time.
async fn wait_configured(env: &Env, within: Duration) {
    let start = Instant::now();
    let mut left: Vec<usize> = (0..env.nodes.len()).collect();
    while !left.is_empty() {
        assert!(
            start.elapsed() < within,
            "{} nodes still have no peers after {within:?}",
            left.len()
        );
        let checks: Vec<_> = left
            .iter()
            .map(|&i| async move { (i, env.node_peers(i).await.is_empty()) })
            .collect();
        let still: Vec<(usize, bool)> = futures::stream::iter(checks)
            .buffer_unordered(16)
            .collect()
            .await;
        left = still
            .into_iter()
            .filter(|(_, e)| *e)
            .map(|(i, _)| i)
            .collect();
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until the policy is `Converged` with all `n` members ready and no edge lagging.
async fn wait_converged(env: &Env, n: usize) -> Value {
    let started = Instant::now();
    let shown = std::cell::Cell::new(0);
    wait_for("the policy to converge", CONVERGE, || {
        let since = started.elapsed().as_secs();
        let shown = &shown;
        async move {
            let s = env.policy_status("big").await;
            let converged = condition(&s, "Converged").is_some_and(|(st, _)| st == "True");
            let done = converged && s["readyMembers"] == n && s["laggingEdges"] == 0;
            // A slow convergence shows what it waits for.
            if !done && since >= 5 * (shown.get() + 1) {
                shown.set(since / 5);
                eprintln!("not converged after {since} s: {s}");
            }
            done.then_some(s)
        }
    })
    .await
}

#[tokio::test]
async fn sparse_policy_at_scale_converges_with_bounded_status_and_a_quiet_steady_state() {
    let n = env_usize("RAGSYNC_SCALE_MEMBERS", 40).clamp(4, 250);
    let extra = env_usize("RAGSYNC_SCALE_EXTRA_POLICIES", 0);
    let groups = GROUPS.min(n);
    let octets: Vec<u8> = (0..n).map(|i| 2 + i as u8).collect();
    let mut env = Env::new("scale", &octets).await;
    let pods: Vec<_> = (0..n)
        .map(|i| {
            env.create_pod(
                i,
                json!({"app": "rag", "group": format!("g{}", i % groups)}),
            )
        })
        .collect();
    futures::stream::iter(pods)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    env.apply(&manifests(groups, extra));
    let started = Instant::now();
    // Every pass is logged with its time and phases (read back at the end).
    env.start_operator_logging(
        "op-scale",
        "info,kube=warn,rag_sync::operator::controller=debug",
    )
    .await;
    // The operator's start-up (a finalizer on every SyncPeer, a first status on every
    // policy and on every SyncPeer those select: about 2,000 writes with 49 extra policies)
    // is its own figure; the policy under test is applied to an operator that has finished
    // it, as a user applies one, so its status writes do not queue behind the start-up's.
    wait_for("the operator's start-up", CONVERGE, || async {
        let peers = env.peers().list(&Default::default()).await.ok()?;
        let policies = env.policies().list(&Default::default()).await.ok()?;
        let selected =
            |p: &&SyncPeer| p.labels().get("ragsync.io/policy").map(String::as_str) != Some("big");
        let done = peers.items.iter().all(|p| !p.finalizers().is_empty())
            && peers
                .items
                .iter()
                .filter(selected)
                .all(|p| p.status.is_some())
            && policies.items.iter().all(|p| p.status.is_some());
        done.then_some(())
    })
    .await;
    let startup_s = started.elapsed().as_secs_f64();
    eprintln!("operator start-up done after {startup_s:.2} s");

    // 1. Config: from `kubectl apply` of the policy to every pod holding its peers.
    let applied = Instant::now();
    env.apply(POLICY);
    wait_configured(&env, CONVERGE).await;
    let config_s = applied.elapsed().as_secs_f64();
    eprintln!("config on every pod after {config_s:.2} s");

    // 2. Live delivery across the sparse graph: each write, until the last member shows it.
    env.nodes[0]
        .create_collection(feeds::COLLECTION, json!({}))
        .await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = env.nodes.iter().map(|n| n.url()).collect();
    let watch = feeds::Feeds::start(&http, &urls, Some(TOKEN));
    watch.wait_collection().await.unwrap();
    eprintln!(
        "collection on every member after {:.2} s",
        applied.elapsed().as_secs_f64()
    );
    // Timed once the start-up rounds are over, one write at a time: each is sent once the
    // one before is on every member, so this is latency, not a queue.
    wait_converged(&env, n).await;
    eprintln!("converged after {:.2} s", applied.elapsed().as_secs_f64());
    let mut sent = Vec::new();
    for k in 0..WRITES {
        let origin = (k * 37) % n;
        let id = format!("w-{k:03}");
        let before = Instant::now();
        env.nodes[origin]
            .put_doc(feeds::COLLECTION, &id, &format!("write {k}"))
            .await;
        sent.push((id, origin, before));
        if let Err(e) = watch.wait_docs(k + 1).await {
            let ids: Vec<&str> = sent.iter().map(|(id, _, _)| id.as_str()).collect();
            delivery_post_mortem(&env, &watch, &ids).await;
            panic!("{e:#}");
        }
    }
    let arrivals = watch.arrivals();
    let mut latencies: Vec<f64> = sent
        .iter()
        .map(|(id, origin, before)| {
            (0..n)
                .filter(|i| i != origin)
                .map(|i| arrivals[i][id].saturating_duration_since(*before))
                .max()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    drop(watch);
    eprintln!("write to every member, ms: {latencies:.0?}");

    // 3. Converged, every member ready, nothing pending.
    let s = wait_converged(&env, n).await;
    assert_eq!(s["members"], n, "{s:#}");
    assert_eq!(
        s["edgeCount"],
        3 * n,
        "fanout 3: each member receives from 3: {s:#}"
    );
    assert!(s["edges"].as_array().unwrap().len() <= 10, "{s:#}");

    // 4. Every status object under 64 KiB.
    let object_bytes = |kind: &str| -> BTreeMap<String, usize> {
        let list: Value = serde_json::from_str(
            &env.c
                .kubectl_ok(&["get", kind, "-n", &env.ns, "-o", "json"]),
        )
        .unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let name = o["metadata"]["name"].as_str().unwrap().to_string();
                (name, serde_json::to_vec(o).unwrap().len())
            })
            .collect()
    };
    let policy_bytes = object_bytes("syncpolicies")["big"];
    let peer_bytes = object_bytes("syncpeers");
    let largest_peer = peer_bytes.values().copied().max().unwrap();
    assert!(
        policy_bytes < STATUS_LIMIT,
        "SyncPolicy is {policy_bytes} bytes"
    );
    assert!(
        largest_peer < STATUS_LIMIT,
        "a SyncPeer is {largest_peer} bytes"
    );

    // 5. Steady state: over three or more status rounds, no status write, no config PUT,
    //    and no node call but the one `GET /admin/status` per member per round.
    let metric = |name: &'static str| env.operator_metric("op-scale", name);
    let status_calls = "ragsync_operator_node_requests_total{call=\"GET /admin/status\"}";
    let all_calls = "ragsync_operator_node_requests_total";
    // Quiet first: the last writes' transfer times and the GC horizon settle within a round
    // or two, and the SyncPeers' deferred figures are written within five; the window starts
    // once one whole round changed nothing and nothing waits to be written.
    let one_round = || async {
        let from = metric(status_calls).await;
        wait_for("a status round", CONVERGE, || async {
            (metric(status_calls).await >= from + n as f64).then_some(())
        })
        .await
    };
    let settled = Instant::now();
    loop {
        let before = env.resource_versions();
        one_round().await;
        if env.resource_versions() == before
            && metric("ragsync_operator_status_deferred").await == 0.0
        {
            break;
        }
        assert!(settled.elapsed() < CONVERGE, "statuses never settled");
    }
    eprintln!(
        "statuses settled after {:.2} s",
        applied.elapsed().as_secs_f64()
    );
    let versions = env.resource_versions();
    let metrics_before = operator_metrics(&env).await;
    let status_before = env.policy_status("big").await;
    let pushes = metric("ragsync_operator_config_pushes_total").await;
    let (calls, statuses) = (metric(all_calls).await, metric(status_calls).await);
    let rounds_started = Instant::now();
    wait_for("three more status rounds", CONVERGE, || async {
        (metric(status_calls).await >= statuses + 3.0 * n as f64).then_some(())
    })
    .await;
    let round_s = rounds_started.elapsed().as_secs_f64() / 3.0;
    let (calls_after, statuses_after) = (metric(all_calls).await, metric(status_calls).await);
    if env.resource_versions() != versions {
        panic!(
            "status writes while quiet; the policy's status before:\n{status_before:#}\nafter:\n{:#}",
            env.policy_status("big").await
        );
    }
    assert_eq!(
        metric("ragsync_operator_config_pushes_total").await,
        pushes,
        "no config PUTs while quiet"
    );
    if calls_after - calls != statuses_after - statuses {
        let requests = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("ragsync_operator_node_requests_total"))
                .map(str::to_string)
                .collect()
        };
        panic!(
            "node calls but GET /admin/status while quiet: {} of {}\nbefore: {:#?}\nafter: {:#?}",
            calls_after - calls - (statuses_after - statuses),
            calls_after - calls,
            requests(&metrics_before),
            requests(&operator_metrics(&env).await),
        );
    }
    let per_round = n as f64;
    eprintln!("steady state checked: a status round every {round_s:.1} s");

    let text = operator_metrics(&env).await;
    let big = format!("policy=\"{}/big\"", env.ns);
    let reconcile = |since, q| {
        histogram_quantile(
            &text,
            since,
            "ragsync_operator_reconcile_duration_seconds",
            &big,
            q,
        )
    };
    let (reconcile_p50, reconcile_p99) = (reconcile("", 0.5), reconcile("", 0.99));
    let (steady_p50, steady_p99) = (
        reconcile(metrics_before.as_str(), 0.5),
        reconcile(metrics_before.as_str(), 0.99),
    );
    let rss = env.operator_pid("op-scale").map_or(0.0, peak_rss_mib);
    let policies = env.policies().list(&Default::default()).await.unwrap();
    let with_status = policies.items.iter().filter(|p| p.status.is_some()).count();
    assert_eq!(
        with_status,
        policies.items.len(),
        "every policy has a status"
    );
    println!(
        "scale figures: {n} members (Sparse, fanout 3), {} SyncPeers over {} policies\n\
         | figure | value |\n| --- | --- |\n\
         | operator start-up: every SyncPeer finalized, every policy and the SyncPeers it selects with a status | {startup_s:.2} s |\n\
         | config on every pod after kubectl apply | {config_s:.2} s |\n\
         | write reaches every member: p50 / p99 / max over {WRITES} writes | {:.0} / {:.0} / {:.0} ms |\n\
         | SyncPolicy / largest SyncPeer object | {policy_bytes} / {largest_peer} bytes |\n\
         | steady state: status writes, config PUTs | 0, 0 |\n\
         | steady state: node calls per status round | {per_round:.0} (one GET /admin/status per member, nothing else; a round every {round_s:.1} s) |\n\
         | reconcile of the policy, p50 / p99 (bucket bounds), steady state | ≤ {steady_p50} / ≤ {steady_p99} s |\n\
         | reconcile of the policy, p50 / p99 (bucket bounds), whole run with start-up | ≤ {reconcile_p50} / ≤ {reconcile_p99} s |\n\
         | operator peak RSS (VmHWM) | {rss:.1} MiB |\n\
         | policies with a status | {with_status} of {} |",
        groups + extra * EXTRA_PEERS,
        1 + extra,
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
        policies.items.len(),
    );
    // Every pass of the big policy, from the operator's log: exact times, where the
    // histogram has only bucket bounds.
    let log = env.operator_log("op-scale");
    let big_policy = format!("{}/big ", env.ns);
    let passes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("phases=") && l.contains(&big_policy))
        .collect();
    let mut totals: Vec<f64> = passes.iter().filter_map(|l| pass_seconds(l)).collect();
    totals.sort_by(f64::total_cmp);
    println!(
        "| passes of the policy: count, p50 / p99 / longest, over 2 s | {}, {:.2} / {:.2} / {:.2} s, {} |",
        totals.len(),
        quantile(&totals, 0.5),
        quantile(&totals, 0.99),
        totals.last().copied().unwrap_or(0.0),
        totals.iter().filter(|&&t| t > 2.0).count(),
    );
    eprintln!("the policy's first passes, with their phases:");
    for line in passes.iter().take(6) {
        eprintln!("  {line}");
    }
    let slow_writes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("slow status write"))
        .collect();
    eprintln!("{} status writes over 1 s", slow_writes.len());
    for line in slow_writes.iter().take(10) {
        eprintln!("  {line}");
    }
    env.kill_operator("op-scale");
}
