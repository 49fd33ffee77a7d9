//! The Kubernetes operator: CRD types, pure membership, topology, lag and status logic, and
//! the controller.
//!
//! The decisions are pure ([`members`], [`topology`], [`lag`], [`status`], [`events`],
//! [`conditions`]) so that they can be unit- and property-tested without a cluster; [`crd`]
//! holds the resource types from which the CRD YAML is generated; [`controller`], [`leader`]
//! and [`node_client`] are the IO edges. [`plugin`] is `kubectl ragsync` (the
//! `kubectl-ragsync` binary): pure views and tables over the resources and the nodes' own
//! status, and the reads behind them.

pub mod conditions;
pub mod controller;
pub mod crd;
pub mod event_queue;
pub mod events;
pub mod lag;
pub mod leader;
pub mod members;
pub mod metrics;
pub mod node_client;
pub mod plugin;
pub mod pod_dns;
pub mod status;
pub mod topology;
