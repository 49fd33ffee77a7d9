//! What the bench prints: one line per run, and min / median / max per figure over the runs,
//! with the targets each figure is held to.

use crate::scenarios::{MeshFigures, RunFigures};

pub const MIB: f64 = 1024.0 * 1024.0;

/// (min, median, max).
pub fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let med = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (v[0], med, v[v.len() - 1])
}

/// The median of `values / scale` and a line naming it with min and max.
pub fn line(
    name: &str,
    unit: &str,
    values: Vec<f64>,
    scale: f64,
    decimals: usize,
) -> (f64, String) {
    let (lo, med, hi) = spread(values.into_iter().map(|x| x / scale).collect());
    (
        med,
        format!(
            "{name:<34} median {med:>10.decimals$}  min {lo:>10.decimals$}  max {hi:>10.decimals$}  {unit:<14}"
        ),
    )
}

fn check(ok: bool, target: &str) -> String {
    if ok {
        format!("(target {target}: met)")
    } else {
        format!("(target {target}: NOT met)")
    }
}

/// The line for two-node run `run` (from 0).
pub fn run_line(run: usize, f: &RunFigures) -> String {
    format!(
        "  run {}: ingest {:.0}/s ({:.2} s); full {:.0}/s ({:.2} s, {:.0} B/doc, CPU µs/doc A {:.1} B {:.1}); incremental {:.0}/s ({:.2} s, {:.0} B/doc, CPU µs/doc A {:.1} B {:.1}; then compaction on B: CPU µs/doc {:.1}, done {:.2} s after the sync); peak RSS A {:.1} MiB, B {:.1} MiB",
        run + 1,
        f.ingest_dps,
        f.ingest.as_secs_f64(),
        f.full_dps,
        f.full.as_secs_f64(),
        f.full_bytes_per_doc,
        f.full_cpu_us.0,
        f.full_cpu_us.1,
        f.incr_dps,
        f.incr.as_secs_f64(),
        f.incr_bytes_per_doc,
        f.incr_cpu_us.0,
        f.incr_cpu_us.1,
        f.compaction_cpu_us,
        f.compaction.as_secs_f64(),
        f.rss_a / MIB,
        f.rss_b / MIB,
    )
}

/// The two-node summary over `runs` of `docs` documents each, one line per figure.
pub fn pair_summary(runs: &[RunFigures], docs: usize) -> Vec<String> {
    let col = |f: fn(&RunFigures) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let mut out = Vec::new();
    let (full, l) = line("full sync", "docs/s", col(|r| r.full_dps), 1.0, 0);
    out.push(format!("{l} {}", check(full >= 60_000.0, ">= 60000")));
    let (incr, l) = line(
        "incremental sync (every 10th doc)",
        "changed docs/s",
        col(|r| r.incr_dps),
        1.0,
        0,
    );
    out.push(format!("{l} {}", check(incr >= 60_000.0, ">= 60000")));
    let (_, l) = line(
        "  counting B's deferred compaction",
        "changed docs/s",
        col(|r| r.incr_with_compaction_dps),
        1.0,
        0,
    );
    out.push(l);
    let (bytes, l) = line(
        "bytes on the wire, full sync",
        "B/doc",
        col(|r| r.full_bytes_per_doc),
        1.0,
        0,
    );
    out.push(format!("{l} {}", check(bytes <= 600.0, "<= 600")));
    let (_, l) = line(
        "bytes on the wire, incremental",
        "B/changed doc",
        col(|r| r.incr_bytes_per_doc),
        1.0,
        0,
    );
    out.push(l);
    let (ra, l) = line("peak RSS node A (source)", "MiB", col(|r| r.rss_a), MIB, 1);
    out.push(format!("{l} {}", check(ra <= 100.0, "<= 100")));
    let (rb, l) = line("peak RSS node B (puller)", "MiB", col(|r| r.rss_b), MIB, 1);
    out.push(format!("{l} {}", check(rb <= 100.0, "<= 100")));
    let (_, l) = line(
        "bulk ingest into A (reference)",
        "docs/s",
        col(|r| r.ingest_dps),
        1.0,
        0,
    );
    out.push(l);
    let (ratio, l) = line(
        "replication / bulk ingest",
        "ratio",
        col(|r| r.full_dps / r.ingest_dps),
        1.0,
        2,
    );
    out.push(format!("{l} {}", check(ratio >= 0.5, ">= 0.5")));
    let (_, l) = line(
        "store size on disk (A), database",
        "B/doc",
        col(|r| r.disk_a),
        docs as f64,
        0,
    );
    let (_, wal, _) = spread(col(|r| r.wal_a));
    out.push(format!("{l} (+ WAL file {:.0} MiB)", wal / MIB));
    out
}

/// The mesh figure's line; each side wrote `mesh_docs` documents.
pub fn mesh_line(m: &MeshFigures, mesh_docs: usize) -> String {
    format!(
        "{:<34} {:>10.2} s  ({} docs per side, {} written on both; {} rounds; {} records, {} conflicts kept; peak RSS max {:.1} MiB)",
        "mesh5 convergence after partition",
        m.convergence.as_secs_f64(),
        mesh_docs,
        mesh_docs / 10,
        m.rounds,
        m.records,
        m.conflicts,
        m.rss_max / MIB
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_median_max_in_any_order() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(spread(vec![4.0, 1.0, 3.0, 2.0]), (1.0, 2.5, 4.0));
        assert_eq!(spread(vec![5.0]), (5.0, 5.0, 5.0));
    }

    #[test]
    fn a_line_names_the_scaled_median_min_and_max() {
        let (med, l) = line("peak RSS", "MiB", vec![3.0 * MIB, MIB, 2.0 * MIB], MIB, 1);
        assert_eq!(med, 2.0);
        assert_eq!(
            l,
            format!(
                "{:<34} median {:>10}  min {:>10}  max {:>10}  {:<14}",
                "peak RSS", "2.0", "1.0", "3.0", "MiB"
            )
        );
    }
}
