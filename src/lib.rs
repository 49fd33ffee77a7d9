//! rag-sync: keeps the document collections of many RAG nodes in sync.
//!
//! - [`hlc`], [`model`], [`store`]: the versioned data and its durable change log.
//! - [`merge`]: what a record becomes when a remote version arrives (pure rules).
//! - [`sync`]: the sync protocol (server router, HTTP client, manager and scheduler).
//! - [`node`]: the reference `rag-node` (data and admin APIs around a [`store::Store`]).
//! - [`operator`]: the Kubernetes operator's domain logic and controller.

pub mod config;
pub mod error;
pub mod hlc;
pub mod http;
pub mod logging;
pub mod merge;
pub mod model;
pub mod node;
pub mod operator;
pub mod shutdown;
pub mod store;
pub mod sync;
