//! With `RAG_BENCH_DEBUG` set, what each node is doing between and during phases: its RSS,
//! and its CPU and run-queue time (per document, or in all) by thread name. Printed to stderr.

use crate::nodes::Node;
use crate::procfs::{self, ThreadSched};

fn enabled() -> bool {
    std::env::var_os("RAG_BENCH_DEBUG").is_some()
}

/// Prints the nodes' current and peak RSS.
pub fn debug_rss(phase: &str, nodes: &[&Node]) {
    if !enabled() {
        return;
    }
    for n in nodes {
        let status = n.pid().map(procfs::status).unwrap_or_default();
        let pick = |k: &str| procfs::status_field(&status, k);
        eprintln!(
            "  [{phase}] {}: RSS {} kB (anon {}, file {}), peak {} kB, threads {}",
            n.name,
            pick("VmRSS:"),
            pick("RssAnon:"),
            pick("RssFile:"),
            pick("VmHWM:"),
            pick("Threads:")
        );
    }
}

/// Prints a node's RSS samples, in MiB.
pub fn debug_rss_series(phase: &str, node: &str, bytes: &[f64]) {
    if !enabled() {
        return;
    }
    let mib: Vec<String> = bytes
        .iter()
        .map(|b| format!("{:.1}", b / crate::report::MIB))
        .collect();
    eprintln!(
        "  [{phase}] {node} VmRSS MiB each second: {}",
        mib.join(" ")
    );
}

/// Per thread name of `node` with CPU time since `before`: seconds on a CPU and seconds
/// runnable but waiting for one.
fn thread_deltas(node: &Node, before: &ThreadSched) -> Vec<(String, f64, f64)> {
    let now = node
        .pid()
        .map(procfs::sched_by_thread_name)
        .unwrap_or_default();
    now.into_iter()
        .map(|(name, (cpu, wait))| {
            let (b_cpu, b_wait) = before.get(&name).copied().unwrap_or_default();
            (name, cpu - b_cpu, wait - b_wait)
        })
        .filter(|(_, cpu, _)| *cpu > 0.0)
        .collect()
}

/// Prints each node's CPU µs per document in a phase, by thread name, from snapshots taken
/// before it, and in brackets the µs per document the thread was runnable but waiting for a
/// CPU.
pub fn debug_thread_cpu(phase: &str, docs: usize, before: &[ThreadSched], nodes: &[&Node]) {
    if !enabled() {
        return;
    }
    let per_doc = |s: f64| s * 1e6 / docs as f64;
    for (n, before) in nodes.iter().zip(before) {
        let parts: Vec<String> = thread_deltas(n, before)
            .into_iter()
            .map(|(name, cpu, wait)| format!("{name} {:.1} [{:.1}]", per_doc(cpu), per_doc(wait)))
            .collect();
        eprintln!(
            "  [{phase}] {} CPU µs/doc [run-queue wait]: {}",
            n.name,
            parts.join(", ")
        );
    }
}

/// Prints each node's CPU milliseconds in a phase, by thread name, from snapshots taken
/// before it, and in brackets the milliseconds the thread was runnable but waiting for a
/// CPU.
pub fn debug_thread_cpu_total(phase: &str, before: &[ThreadSched], nodes: &[&Node]) {
    if !enabled() {
        return;
    }
    for (n, before) in nodes.iter().zip(before) {
        let parts: Vec<String> = thread_deltas(n, before)
            .into_iter()
            .map(|(name, cpu, wait)| format!("{name} {:.1} [{:.1}]", cpu * 1e3, wait * 1e3))
            .collect();
        eprintln!(
            "  [{phase}] {} CPU ms [run-queue wait]: {}",
            n.name,
            parts.join(", ")
        );
    }
}

/// Per-thread scheduler snapshots of `nodes` for [`debug_thread_cpu`].
pub fn thread_cpu_snapshot(nodes: &[&Node]) -> Vec<ThreadSched> {
    nodes
        .iter()
        .map(|n| {
            n.pid()
                .map(procfs::sched_by_thread_name)
                .unwrap_or_default()
        })
        .collect()
}
