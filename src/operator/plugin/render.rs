//! Plain-text rendering of the plugin's reports, pure (strings in, strings out).

use std::fmt::Write as _;

use crate::model::Kind;
use crate::operator::crd::TopologyType;

use super::view::{
    short_duration, Access, ConflictsReport, EdgeView, MemberView, NodeRead, StatusReport,
    TotalsView,
};

/// Edges shown without `--all-edges`.
pub const DEFAULT_EDGE_LIMIT: usize = 20;

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// A duration in milliseconds, short (see [`short_duration`]).
pub fn duration_ms(ms: u64) -> String {
    short_duration(ms)
}

fn topology(r: &StatusReport) -> String {
    let t = &r.topology;
    match t.type_ {
        TopologyType::HubAndSpoke => format!("HubAndSpoke (hubs: {})", t.hubs.join(", ")),
        TopologyType::Explicit => format!(
            "Explicit ({})",
            t.edges
                .iter()
                .map(|e| format!("{} -> {}", e.from, e.to))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}

fn access(a: Access) -> &'static str {
    match a {
        Access::Proxy => "through the API server's pod proxy",
        Access::Direct => "directly at their endpoints (--direct)",
    }
}

fn totals(t: &TotalsView) -> String {
    let mut s = format!(
        "{} members, {} ready, max lag {}s, {} conflicts",
        t.members, t.ready_members, t.max_lag_seconds, t.conflicts
    );
    if let Some(h) = &t.gc_horizon {
        let _ = write!(s, ", GC horizon {h}");
    }
    if let Some(l) = &t.last_sync_time {
        let _ = write!(s, ", last sync {l}");
    }
    s
}

fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// The NODE column: how the live read went.
fn node_cell(m: &MemberView) -> String {
    match &m.node {
        NodeRead::NotRead => "-".into(),
        NodeRead::Skipped { .. } => "skipped".into(),
        NodeRead::Read { .. } | NodeRead::Listed { .. } => "ok".into(),
        NodeRead::Failed { .. } => "FAILED".into(),
    }
}

/// A member's row: live from its node when it was read, else as status reports it.
fn member_rows(members: &[MemberView]) -> Vec<Vec<String>> {
    let unknown = || "unknown".to_string();
    members
        .iter()
        .map(|m| {
            let (node_id, watermark, conflicts, lag, pending) = match &m.node {
                NodeRead::Read {
                    node_id,
                    watermark,
                    conflicts,
                    pending_changes,
                    lag_ms,
                    ..
                } => (
                    node_id.clone(),
                    watermark.clone(),
                    conflicts.to_string(),
                    lag_ms.map_or_else(unknown, duration_ms),
                    pending_changes.map_or_else(unknown, |p| p.to_string()),
                ),
                _ => (
                    or_dash(m.node_id.as_deref()),
                    or_dash(m.watermark.as_deref()),
                    m.conflicts.to_string(),
                    format!("{}s", m.lag_seconds),
                    m.pending_changes.to_string(),
                ),
            };
            vec![
                m.name.clone(),
                m.peer.clone(),
                node_id,
                if m.ready { "true" } else { "false" }.into(),
                watermark,
                conflicts,
                lag,
                pending,
                node_cell(m),
            ]
        })
        .collect()
}

const MEMBER_HEADERS: [&str; 9] = [
    "MEMBER",
    "SYNCPEER",
    "NODE-ID",
    "READY",
    "WATERMARK",
    "CONFLICTS",
    "LAG",
    "PENDING",
    "NODE",
];

/// The members' errors: the live read's failure or skip, and the error status reports.
fn member_notes(members: &[MemberView], out: &mut String) {
    let mut lines = Vec::new();
    for m in members {
        match &m.node {
            NodeRead::Failed { error } => {
                lines.push(format!("  {}: node not read: {error}", m.name))
            }
            NodeRead::Skipped { reason } => {
                lines.push(format!("  {}: node not read: {reason}", m.name))
            }
            _ => {}
        }
        if let Some(e) = &m.last_error {
            lines.push(format!("  {}: last error (status): {e}", m.name));
        }
    }
    if !lines.is_empty() {
        out.push_str("Member errors:\n");
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
}

fn edge_rows(edges: &[EdgeView]) -> Vec<Vec<String>> {
    edges
        .iter()
        .map(|e| {
            vec![
                e.from.clone(),
                e.to.clone(),
                e.mode.to_string(),
                e.pending_changes
                    .map_or_else(|| "unknown".into(), |p| p.to_string()),
                e.lag_ms.map_or_else(|| "unknown".into(), duration_ms),
                match &e.unknown_reason {
                    Some(why) => format!("unknown: {why}"),
                    None => e.source.to_string(),
                },
            ]
        })
        .collect()
}

/// `kubectl ragsync status`, as text. Shows at most `edge_limit` edges (worst first) and
/// how many more there are.
pub fn status(r: &StatusReport, edge_limit: Option<usize>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "SyncPolicy {}/{}: {}{}, interval {}",
        r.namespace,
        r.policy,
        topology(r),
        if r.paused { ", PAUSED" } else { "" },
        r.interval
    );
    let _ = writeln!(out, "Totals: {}", totals(&r.totals));
    let _ = writeln!(out, "Nodes read {}", access(r.access));
    for n in &r.notes {
        let _ = writeln!(out, "Note: {n}");
    }

    out.push_str("\nConditions:\n");
    if r.conditions.is_empty() {
        out.push_str("  (none yet)\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["TYPE", "STATUS", "REASON", "MESSAGE"],
            &rows,
        )));
    }

    out.push_str(
        "\nMembers (NODE ok: read live from the node; otherwise as the operator last reported):\n",
    );
    if r.members.is_empty() {
        out.push_str("  (none)\n");
    } else {
        out.push_str(&indent(&table(&MEMBER_HEADERS, &member_rows(&r.members))));
        member_notes(&r.members, &mut out);
    }

    let total = r.edges.len();
    let shown = edge_limit.map_or(total, |l| l.min(total));
    let _ = writeln!(
        out,
        "\nEdges ({total}, worst first; pending changes and lag read live from each sender):"
    );
    if total == 0 {
        out.push_str("  (none: no member that was read has peers)\n");
    } else {
        out.push_str(&indent(&table(
            &["FROM", "TO", "MODE", "PENDING", "LAG", "SOURCE"],
            &edge_rows(&r.edges[..shown]),
        )));
        if shown < total {
            let _ = writeln!(
                out,
                "  ... and {} more edges (--all-edges shows them)",
                total - shown
            );
        }
    }
    out
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// `kubectl ragsync conflicts`, as text.
pub fn conflicts(r: &ConflictsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Conflicts retained by the members of SyncPolicy {}/{}{}",
        r.namespace,
        r.policy,
        r.collection
            .as_deref()
            .map(|c| format!(", collection {c}"))
            .unwrap_or_default(),
    );
    let _ = writeln!(out, "Nodes read {}", access(r.access));
    for n in &r.notes {
        let _ = writeln!(out, "Note: {n}");
    }
    if r.conflicts.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .conflicts
            .iter()
            .map(|c| {
                vec![
                    c.collection.clone(),
                    match c.kind {
                        Kind::Document => c.id.clone(),
                        Kind::Collection => "(settings)".into(),
                    },
                    format!("{}@{}", c.winner.who(), c.winner.time),
                    c.losers
                        .iter()
                        .map(|l| format!("{}@{}", l.who(), l.time))
                        .collect::<Vec<_>>()
                        .join(", "),
                    c.members.join(","),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["COLLECTION", "DOCUMENT", "WINNER", "LOSERS", "HELD BY"],
            &rows,
        )));
    }
    let failed: Vec<String> = r
        .members
        .iter()
        .filter_map(|m| match &m.node {
            NodeRead::Failed { error } => Some(format!("  {}: node not read: {error}", m.name)),
            NodeRead::Skipped { reason } => Some(format!("  {}: node not read: {reason}", m.name)),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        out.push_str("Member errors (their conflicts are missing above):\n");
        for l in failed {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}
