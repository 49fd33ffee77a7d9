//! Operator metrics (prometheus-client, text exposition on `/metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Bucket bounds of the reconcile durations, seconds.
const RECONCILE_BUCKETS: [f64; 12] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0,
];

type Labels = Vec<(String, String)>;

pub struct OperatorMetrics {
    registry: Registry,
    pub reconciles: Family<Labels, Counter>,
    pub reconcile_errors: Family<Labels, Counter>,
    /// By policy (`ns/name`), so a large policy's reconciles can be told from the rest.
    pub reconcile_seconds: Family<Labels, Histogram>,
    pub config_pushes: Counter,
    pub node_requests: crate::operator::node_client::CallCounter,
    pub sync_triggers: Counter,
    pub member_lag_seconds: Family<Labels, Gauge>,
    pub member_pending: Family<Labels, Gauge>,
    pub policy_max_lag_seconds: Family<Labels, Gauge>,
    pub policy_lagging_edges: Family<Labels, Gauge>,
    pub conflicts: Family<Labels, Gauge>,
    /// SyncPeers whose new progress figures wait for their turn to be written.
    pub status_deferred: Family<Labels, Gauge>,
    pub leader: Gauge,
    pub events_dropped: Counter,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OperatorMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ragsync_operator");
        let m = OperatorMetrics {
            registry: Registry::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            // 1-2-5 bounds: one falls on the 2 s a large policy's pass should stay under.
            reconcile_seconds: Family::new_with_constructor(|| {
                Histogram::new(RECONCILE_BUCKETS.iter().copied())
            }),
            config_pushes: Counter::default(),
            node_requests: Default::default(),
            sync_triggers: Counter::default(),
            member_lag_seconds: Family::default(),
            member_pending: Family::default(),
            policy_max_lag_seconds: Family::default(),
            policy_lagging_edges: Family::default(),
            conflicts: Family::default(),
            status_deferred: Family::default(),
            leader: Gauge::default(),
            events_dropped: Counter::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "SyncPolicy reconcile duration, by policy",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "config_pushes",
            "PUT /admin/config sent to nodes",
            m.config_pushes.clone(),
        );
        registry.register(
            "node_requests",
            "Requests sent to nodes, by call",
            m.node_requests.clone(),
        );
        registry.register(
            "sync_triggers",
            "POST /admin/sync sent to nodes",
            m.sync_triggers.clone(),
        );
        registry.register(
            "member_lag_seconds",
            "Age of the oldest change a member has not received yet",
            m.member_lag_seconds.clone(),
        );
        registry.register(
            "member_pending_changes",
            "Changes other members hold that a member has not received yet",
            m.member_pending.clone(),
        );
        registry.register(
            "policy_max_lag_seconds",
            "The largest lag over a policy's edges",
            m.policy_max_lag_seconds.clone(),
        );
        registry.register(
            "policy_lagging_edges",
            "Edges of a policy with changes pending",
            m.policy_lagging_edges.clone(),
        );
        registry.register(
            "conflicts",
            "Conflicts recorded by a policy's members",
            m.conflicts.clone(),
        );
        registry.register(
            "status_deferred",
            "SyncPeers of a policy whose new progress figures are not written yet",
            m.status_deferred.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            m.leader.clone(),
        );
        registry.register(
            "events_dropped",
            "Kubernetes events dropped because the publishing queue was full",
            m.events_dropped.clone(),
        );
        OperatorMetrics { registry, ..m }
    }

    pub fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_durations_are_kept_per_policy() {
        let m = OperatorMetrics::new();
        let big = OperatorMetrics::labels(&[("policy", "ns/big")]);
        m.reconcile_seconds.get_or_create(&big).observe(0.3);
        let text = m.encode();
        let line = text
            .lines()
            .find(|l| l.contains("reconcile_duration_seconds_bucket") && l.contains("0.5"))
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(
            line,
            "ragsync_operator_reconcile_duration_seconds_bucket{le=\"0.5\",policy=\"ns/big\"} 1"
        );
    }
}
