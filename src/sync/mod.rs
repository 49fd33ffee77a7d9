//! The sync protocol's ends: the server router, the HTTP client, and the manager that runs
//! rounds against peers. What they exchange is in [`crate::wire`].

pub mod client;
pub mod embedding;
pub mod feed;
pub mod manager;
pub mod metrics;
pub mod pullers;
pub mod server;

pub use client::HttpSyncPeer;
pub use manager::SyncManager;
