//! Prometheus metrics of the sync library (prometheus-client, text exposition).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type PeerLabels = Vec<(String, String)>;

/// Counters and gauges of one node.
pub struct Metrics {
    registry: Registry,
    pulled: Family<PeerLabels, Counter>,
    pushed: Family<PeerLabels, Counter>,
    errors: Family<PeerLabels, Counter>,
    conflicts: Counter,
    served: Counter,
    push_applied: Counter,
    round_seconds: Histogram,
    delivery: Family<PeerLabels, Histogram, fn() -> Histogram>,
    /// `GET /sync/changes?wait=` requests held now.
    pub waiting: Gauge,
    pub head_wall_ms: Gauge,
    pub documents: Gauge,
    pub tombstones: Gauge,
    pub retained_conflicts: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ragsync");
        let m = Metrics {
            pulled: Family::default(),
            pushed: Family::default(),
            errors: Family::default(),
            conflicts: Counter::default(),
            served: Counter::default(),
            push_applied: Counter::default(),
            round_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            delivery: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            waiting: Gauge::default(),
            head_wall_ms: Gauge::default(),
            documents: Gauge::default(),
            tombstones: Gauge::default(),
            retained_conflicts: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "pulled_changes",
            "Remote changes applied by pulls",
            m.pulled.clone(),
        );
        registry.register("pushed_changes", "Changes sent by pushes", m.pushed.clone());
        registry.register(
            "sync_errors",
            "Failed sync rounds with a peer",
            m.errors.clone(),
        );
        registry.register(
            "conflicts_resolved",
            "Concurrent updates resolved on this node",
            m.conflicts.clone(),
        );
        registry.register(
            "served_changes",
            "Changes served to pulling peers",
            m.served.clone(),
        );
        registry.register(
            "push_applied_changes",
            "Changes applied from pushing peers",
            m.push_applied.clone(),
        );
        registry.register(
            "sync_round_seconds",
            "Duration of a sync round with one peer",
            m.round_seconds.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From a change's commit on its origin (its HLC wall time) to its apply here",
            m.delivery.clone(),
        );
        registry.register(
            "waiting_requests",
            "Change feed requests held waiting for a commit",
            m.waiting.clone(),
        );
        registry.register(
            "head_wall_milliseconds",
            "Wall time of the change log head",
            m.head_wall_ms.clone(),
        );
        registry.register("documents", "Live documents", m.documents.clone());
        registry.register("tombstones", "Retained tombstones", m.tombstones.clone());
        registry.register(
            "retained_conflicts",
            "Losing versions kept as conflict records",
            m.retained_conflicts.clone(),
        );
        Metrics { registry, ..m }
    }

    fn peer(peer: &str) -> PeerLabels {
        vec![("peer".to_string(), peer.to_string())]
    }

    pub fn round(
        &self,
        peer: &str,
        pulled: u64,
        pushed: u64,
        conflicts: u64,
        seconds: f64,
        failed: bool,
    ) {
        self.transferred(peer, pulled, pushed, conflicts, failed);
        self.round_seconds.observe(seconds);
    }

    /// What a round or a live pull between rounds moved, and whether it failed.
    pub fn transferred(&self, peer: &str, pulled: u64, pushed: u64, conflicts: u64, failed: bool) {
        self.pulled.get_or_create(&Self::peer(peer)).inc_by(pulled);
        self.pushed.get_or_create(&Self::peer(peer)).inc_by(pushed);
        self.conflicts.inc_by(conflicts);
        if failed {
            self.errors.get_or_create(&Self::peer(peer)).inc();
        }
    }

    /// Pulled changes applied at `now_ms`, written at `written_ms` on their origins.
    pub fn delivered(&self, peer: &str, now_ms: u64, written_ms: &[u64]) {
        let h = self.delivery.get_or_create(&Self::peer(peer));
        for w in written_ms {
            h.observe(now_ms.saturating_sub(*w) as f64 / 1000.0);
        }
    }

    pub fn served_changes(&self, n: usize) {
        self.served.inc_by(n as u64);
    }

    pub fn applied_push(&self, applied: usize, conflicts: usize) {
        self.push_applied.inc_by(applied as u64);
        self.conflicts.inc_by(conflicts as u64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
