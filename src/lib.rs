//! rag-sync: keeps the document collections of many RAG nodes in sync.
//!
//! Layers, each using only those above it in this list (tests/layers.rs checks it):
//!
//! - [`hlc`], [`reload`]: clocks; values loaded from files and re-loaded when they change.
//! - [`error`], [`model`]: errors; records, versions, documents, changes.
//! - [`config`], [`http`], [`auth`], [`tls`]: the sync configuration; axum helpers (errors
//!   as JSON, limits); tokens and who may call what; rustls configs from reloading PEM files.
//! - [`wire`]: every type that crosses HTTP, and the hand-written codecs of the hot ones.
//! - [`merge`]: what a record becomes when a remote version arrives (pure rules).
//! - [`store`]: the durable change log behind the [`store::Store`] trait (SQLite, memory).
//! - [`sync`]: the protocol's ends: server router, HTTP client, manager and scheduler.
//! - [`node`]: the reference `rag-node` (data and admin APIs around a store).
//! - [`operator`] (feature `operator`): the Kubernetes operator, which talks to nodes only
//!   through [`wire`].

pub mod auth;
pub mod config;
pub mod error;
pub mod hlc;
pub mod http;
pub mod logging;
pub mod merge;
pub mod model;
pub mod node;
#[cfg(feature = "operator")]
pub mod operator;
pub mod reload;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod tls;
pub mod wire;
