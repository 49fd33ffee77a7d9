//! The Kubernetes operator: CRD types, pure topology and lag logic, and the controller.
//!
//! The domain logic is kept pure ([`topology`], [`lag`], [`conditions`], [`selector`]) so
//! that it can be unit- and property-tested without a cluster; [`crd`] holds the resource
//! types from which the CRD YAML is generated; [`controller`], [`leader`] and
//! [`node_client`] are the IO edges.

pub mod conditions;
pub mod controller;
pub mod crd;
pub mod lag;
pub mod leader;
pub mod metrics;
pub mod node_client;
pub mod selector;
pub mod topology;
