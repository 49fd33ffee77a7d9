//! The wire: every type that crosses HTTP between nodes, clients and the operator, and the
//! hand-written codecs of the hot ones. The server, the client, the node and the operator
//! all use these, so a field is added in one place.
//!
//! - [`sync`]: the sync API's bodies (`/sync/*`) and headers.
//! - [`page`]: the envelope of a change page or push written around the store's bytes.
//! - [`query`]: query parameters, encoded by clients and parsed by servers.
//! - [`data`]: the data API's bodies (`/collections/...`).
//! - [`admin`]: the admin API's bodies (`/admin/*`), which the operator reads.
//! - [`schema`]: the OpenAPI schemas of the types whose serde is hand-written.
//! - [`codec`]: hand-written serde for [`Change`](crate::model::Change) and
//!   [`Value`](crate::model::Value), tested byte for byte against the derived forms.

pub mod admin;
pub mod codec;
pub mod data;
pub mod page;
pub mod query;
pub mod schema;
pub mod sync;

pub use admin::{Backlog, NodeStatus, PeerRoundStats, PeerStatus, PullerStatus, SyncNowResponse};
pub use page::PageWriter;
pub use query::{BacklogQuery, ChangeFilter, ChangesQuery};
pub use sync::{
    ChangesPage, CollectionSummary, CollectionsResponse, ConflictEntry, ConflictReport,
    ConflictsResponse, PushRequest, PushResponse, WatermarkResponse, DEFAULT_PAGE, HAS_MORE_HEADER,
    MAX_PAGE, WATERMARK_HEADER,
};
