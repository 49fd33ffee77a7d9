//! The Kubernetes operator: CRD types, pure topology and lag logic, and the controller.
//!
//! The domain logic is kept pure ([`topology`], [`lag`], [`conditions`]) so that it can be
//! unit- and property-tested without a cluster; [`crd`] holds the resource types from which
//! the CRD YAML is generated.

pub mod conditions;
pub mod crd;
pub mod lag;
pub mod topology;
