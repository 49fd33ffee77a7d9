//! What the bench prints: one line per run, and min / median / max per figure over the runs,
//! with the targets each figure is held to.

use crate::latency::{Delivery, LatencyFigures};
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

/// The `q` quantile (0 < q ≤ 1) of ascending `sorted` by nearest rank: the smallest value
/// with at least a fraction `q` of the values at or below it (0 if there are none).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn delivery(d: &Delivery) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms of {}",
        d.p50_ms, d.p99_ms, d.max_ms, d.count
    )
}

/// The line for `--latency` run `run` (from 0).
pub fn latency_run_line(run: usize, f: &LatencyFigures) -> String {
    if let Some((n, d)) = &f.sparse {
        return format!("  run {}: sparse{n} {}", run + 1, delivery(d));
    }
    let mut parts = vec![format!("mesh5 {}", delivery(&f.mesh5))];
    if let Some(d) = &f.mesh16 {
        parts.push(format!("mesh16 {}", delivery(d)));
    }
    if let Some(pct) = f.idle_cpu_pct {
        parts.push(format!("idle mesh16 {pct:.2} % of a core"));
    }
    if let Some(d) = &f.hub {
        parts.push(format!("hub+15 {}", delivery(d)));
    }
    if let Some(s) = &f.sustained {
        let rss: Vec<String> = s
            .rss
            .iter()
            .map(|r| {
                format!(
                    "{} {:.1}/{:.1}/{:.1}/{:.1}",
                    r.node,
                    r.first / MIB,
                    r.mid / MIB,
                    r.last / MIB,
                    r.max / MIB
                )
            })
            .collect();
        parts.push(format!(
            "sustained {:.0} writes/s, delivery {}, VmRSS MiB first/mid/last/max {}",
            s.rate,
            delivery(&s.delivery),
            rss.join(", ")
        ));
    }
    format!("  run {}: {}", run + 1, parts.join("; "))
}

/// The `--latency` summary over `runs`, one line per figure, with the targets.
pub fn latency_summary(runs: &[LatencyFigures]) -> Vec<String> {
    let mut out = Vec::new();
    let mut figure = |name: &str, unit: &str, values: Vec<f64>, target: Option<(f64, &str)>| {
        if values.is_empty() {
            return;
        }
        let (med, l) = line(name, unit, values, 1.0, 1);
        out.push(match target {
            Some((limit, text)) => format!("{l} {}", check(med <= limit, text)),
            None => l,
        });
    };
    let col = |f: &dyn Fn(&LatencyFigures) -> Option<f64>| -> Vec<f64> {
        runs.iter().filter_map(f).collect()
    };
    figure(
        "mesh5: visible on all, p50",
        "ms",
        col(&|r| r.sparse.is_none().then_some(r.mesh5.p50_ms)),
        Some((10.0, "<= 10")),
    );
    figure(
        "mesh5: visible on all, p99",
        "ms",
        col(&|r| r.sparse.is_none().then_some(r.mesh5.p99_ms)),
        Some((50.0, "<= 50")),
    );
    figure(
        "sparse (fanout 3): on all, p50",
        "ms",
        col(&|r| r.sparse.as_ref().map(|(_, d)| d.p50_ms)),
        None,
    );
    figure(
        "sparse (fanout 3): on all, p99",
        "ms",
        col(&|r| r.sparse.as_ref().map(|(_, d)| d.p99_ms)),
        None,
    );
    figure(
        "mesh16: visible on all, p50",
        "ms",
        col(&|r| r.mesh16.as_ref().map(|d| d.p50_ms)),
        None,
    );
    figure(
        "mesh16: visible on all, p99",
        "ms",
        col(&|r| r.mesh16.as_ref().map(|d| d.p99_ms)),
        Some((100.0, "<= 100")),
    );
    figure(
        "hub+15: visible on all, p50",
        "ms",
        col(&|r| r.hub.as_ref().map(|d| d.p50_ms)),
        None,
    );
    figure(
        "hub+15: visible on all, p99",
        "ms",
        col(&|r| r.hub.as_ref().map(|d| d.p99_ms)),
        Some((100.0, "<= 100")),
    );
    figure(
        "idle CPU, mesh16 (all 16 nodes)",
        "% of a core",
        col(&|r| r.idle_cpu_pct),
        Some((2.0, "<= 2")),
    );
    figure(
        "sustained: writes acknowledged",
        "writes/s",
        col(&|r| r.sustained.as_ref().map(|s| s.rate)),
        None,
    );
    figure(
        "sustained: delivery p50",
        "ms",
        col(&|r| r.sustained.as_ref().map(|s| s.delivery.p50_ms)),
        None,
    );
    figure(
        "sustained: delivery p99",
        "ms",
        col(&|r| r.sustained.as_ref().map(|s| s.delivery.p99_ms)),
        Some((250.0, "<= 250")),
    );
    let rss = |f: fn(&crate::latency::RssSeries) -> f64| {
        move |r: &LatencyFigures| {
            r.sustained
                .as_ref()
                .map(|s| s.rss.iter().map(f).fold(f64::NEG_INFINITY, f64::max) / MIB)
        }
    };
    figure(
        "sustained: VmRSS first (max node)",
        "MiB",
        col(&rss(|r| r.first)),
        None,
    );
    figure(
        "sustained: VmRSS last (max node)",
        "MiB",
        col(&rss(|r| r.last)),
        None,
    );
    figure(
        "sustained: VmRSS max (max node)",
        "MiB",
        col(&rss(|r| r.max)),
        None,
    );
    figure(
        "sustained: VmRSS last-first (max)",
        "MiB",
        col(&rss(|r| r.last - r.first)),
        None,
    );
    figure(
        "sustained: VmRSS last-mid (max)",
        "MiB",
        col(&rss(|r| r.last - r.mid)),
        None,
    );
    out
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
    fn quantile_is_by_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 100.0);
        assert_eq!(quantile(&v, 0.99), 198.0);
        assert_eq!(quantile(&v, 1.0), 200.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn latency_summary_holds_each_figure_to_its_target_and_skips_figures_not_run() {
        let quick = |p50_ms, p99_ms| LatencyFigures {
            mesh5: Delivery {
                p50_ms,
                p99_ms,
                max_ms: p99_ms,
                count: 200,
            },
            ..Default::default()
        };
        let lines = latency_summary(&[quick(4.0, 60.0), quick(12.0, 40.0), quick(8.0, 45.0)]);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[0].starts_with("mesh5: visible on all, p50"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("median        8.0"), "{}", lines[0]);
        assert!(lines[0].ends_with("(target <= 10: met)"), "{}", lines[0]);
        assert!(lines[1].contains("median       45.0"), "{}", lines[1]);
        assert!(lines[1].ends_with("(target <= 50: met)"), "{}", lines[1]);
        let slow = latency_summary(&[quick(11.0, 51.0)]);
        assert!(slow.iter().all(|l| l.ends_with("NOT met)")), "{slow:#?}");
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
