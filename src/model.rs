//! The replicated data: collections, documents, their versions, and the changes that carry
//! them between nodes.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::{PartialSchema, ToSchema};

use crate::hlc::Hlc;

/// A node's 16-bit id, four lowercase hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u16);

impl NodeId {
    pub fn to_hex(self) -> String {
        format!("{:04x}", self.0)
    }
    pub fn from_hex(s: &str) -> Result<NodeId, String> {
        if s.len() != 4
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "'{s}' is not a node id: expected 4 lowercase hex digits"
            ));
        }
        u16::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:04x})", self.0)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        NodeId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Per origin node, the HLC of that node's latest write this version has seen. An origin's
/// HLCs strictly increase, so they serve as its counter.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(pub BTreeMap<NodeId, Hlc>);

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k.to_hex(), v.to_hex())))
            .finish()
    }
}

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// `self` has seen everything `other` has, and more.
    Dominates,
    /// `other` has seen everything `self` has, and more.
    DominatedBy,
    Concurrent,
}

impl VersionVector {
    pub fn get(&self, node: NodeId) -> Hlc {
        self.0.get(&node).copied().unwrap_or(Hlc::ZERO)
    }

    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut greater = false;
        let mut less = false;
        for k in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (self.get(*k), other.get(*k));
            greater |= a > b;
            less |= a < b;
        }
        match (greater, less) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Dominates,
            (false, true) => Causality::DominatedBy,
            (true, true) => Causality::Concurrent,
        }
    }

    /// Pointwise maximum.
    pub fn join(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.0.clone();
        for (k, v) in &other.0 {
            let e = out.entry(*k).or_insert(*v);
            if *v > *e {
                *e = *v;
            }
        }
        VersionVector(out)
    }

    /// This vector after a write by `node` at `hlc`.
    pub fn bumped(&self, node: NodeId, hlc: Hlc) -> VersionVector {
        let mut out = self.0.clone();
        out.insert(node, hlc);
        VersionVector(out)
    }
}

/// The version of a record: who wrote it when, and what history it has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Version {
    pub hlc: Hlc,
    pub node: NodeId,
    pub vv: VersionVector,
}

impl Version {
    /// Order for picking a visible winner: greater `(hlc, node)`.
    pub fn order_key(&self) -> (Hlc, NodeId) {
        (self.hlc, self.node)
    }
}

/// `min_tokens` must not exceed `max_tokens`, and `overlap_tokens` must be less than it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkingSettings {
    #[schema(minimum = 1, maximum = 1_000_000, default = 512)]
    pub max_tokens: u32,
    #[schema(maximum = 1_000_000, default = 64)]
    pub min_tokens: u32,
    #[schema(maximum = 999_999, default = 50)]
    pub overlap_tokens: u32,
}

impl Default for ChunkingSettings {
    fn default() -> Self {
        ChunkingSettings {
            max_tokens: 512,
            min_tokens: 64,
            overlap_tokens: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSettings {
    #[schema(minimum = 1, maximum = 10_000, default = 5)]
    pub top_k: u32,
    #[schema(default = false)]
    pub hybrid: bool,
    #[schema(minimum = 0.0, maximum = 1.0, default = 0.5)]
    pub hybrid_alpha: f64,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            top_k: 5,
            hybrid: false,
            hybrid_alpha: 0.5,
        }
    }
}

/// Which embedding model produced a collection's vectors. Vectors of different models are
/// never mixed: sync of a collection stops while two nodes name different models.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65_536)]
    pub dimensions: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CollectionSettings {
    pub chunking: ChunkingSettings,
    pub search: SearchSettings,
    pub embedding: EmbeddingSettings,
}

/// When a settings field was last written. Settings merge as per-field last-writer-wins
/// registers: each unit keeps the value with the greatest stamp, which is commutative,
/// associative and idempotent, and respects causality (a later write has a greater HLC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct Stamp {
    pub hlc: Hlc,
    pub node: NodeId,
}

/// Stamps of the settings units (see [`SETTINGS_UNITS`]); a missing unit counts as stamped
/// with the record's own version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldStamps(pub BTreeMap<String, Stamp>);

impl FieldStamps {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The independently merged parts of collection settings, as JSON pointers. Chunking and
/// embedding are single units because their fields are only valid together.
pub const SETTINGS_UNITS: [&str; 5] = [
    "/chunking",
    "/search/top_k",
    "/search/hybrid",
    "/search/hybrid_alpha",
    "/embedding",
];

impl CollectionSettings {
    /// Stamps for `self` written at `now` over a previous value: unchanged units keep their
    /// stamps, changed ones get `now`.
    pub fn stamps_after_write(
        &self,
        previous: Option<(&CollectionSettings, &FieldStamps, Stamp)>,
        now: Stamp,
    ) -> FieldStamps {
        let new = serde_json::to_value(self).unwrap_or_default();
        let old =
            previous.map(|(s, st, dflt)| (serde_json::to_value(s).unwrap_or_default(), st, dflt));
        let mut out = BTreeMap::new();
        for unit in SETTINGS_UNITS {
            let stamp = match &old {
                Some((o, st, dflt)) if o.pointer(unit) == new.pointer(unit) => {
                    st.0.get(unit).copied().unwrap_or(*dflt)
                }
                _ => now,
            };
            out.insert(unit.to_string(), stamp);
        }
        FieldStamps(out)
    }

    pub fn validate(&self) -> Result<(), String> {
        let c = &self.chunking;
        if c.max_tokens == 0 || c.max_tokens > 1_000_000 {
            return Err(format!(
                "settings.chunking.max_tokens must be between 1 and 1000000, got {}",
                c.max_tokens
            ));
        }
        if c.min_tokens > c.max_tokens {
            return Err(format!(
                "settings.chunking.min_tokens ({}) must not exceed max_tokens ({})",
                c.min_tokens, c.max_tokens
            ));
        }
        if c.overlap_tokens >= c.max_tokens {
            return Err(format!(
                "settings.chunking.overlap_tokens ({}) must be less than max_tokens ({})",
                c.overlap_tokens, c.max_tokens
            ));
        }
        let s = &self.search;
        if s.top_k == 0 || s.top_k > 10_000 {
            return Err(format!(
                "settings.search.top_k must be between 1 and 10000, got {}",
                s.top_k
            ));
        }
        if !(0.0..=1.0).contains(&s.hybrid_alpha) {
            return Err(format!(
                "settings.search.hybrid_alpha must be between 0 and 1, got {}",
                s.hybrid_alpha
            ));
        }
        if let Some(d) = self.embedding.dimensions {
            if d == 0 || d > 65_536 {
                return Err(format!(
                    "settings.embedding.dimensions must be between 1 and 65536, got {d}"
                ));
            }
        }
        if let Some(m) = &self.embedding.model {
            if m.trim().is_empty() || m.len() > 256 {
                return Err("settings.embedding.model must be 1 to 256 characters".into());
            }
        }
        Ok(())
    }
}

/// A document as the data API and the sync protocol carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Document {
    #[schema(pattern = "^[^/\\u0000-\\u001f\\u007f-\\u009f]{1,128}$")]
    pub id: String,
    pub content: String,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

/// A document's metadata: a JSON object, kept as its JSON text.
///
/// A node never looks inside metadata, so a pulled or pushed document keeps the text it came
/// with, and is stored and served again byte for byte, without building a tree of it. Local
/// writes arrive as [`Metadata::from_value`], which writes serde_json's compact form, so
/// every version's text is fixed where it was written and the same on every node.
#[derive(Clone)]
pub struct Metadata(Box<serde_json::value::RawValue>);

impl Metadata {
    /// The metadata of `value`, which must be a JSON object.
    pub fn from_value(value: serde_json::Value) -> Result<Metadata, &'static str> {
        if !value.is_object() {
            return Err(Self::NOT_AN_OBJECT);
        }
        // `Value`'s Display is serde_json's compact JSON.
        let text = value.to_string();
        Ok(Metadata(
            serde_json::value::RawValue::from_string(text).expect("serde_json's output is JSON"),
        ))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    const NOT_AN_OBJECT: &'static str = "metadata must be a JSON object";
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata(serde_json::value::RawValue::from_string("{}".into()).expect("{} is JSON"))
    }
}

/// Equal texts: a version's metadata has the same text on every node (see [`Metadata`]).
impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Metadata {
    /// Checks the syntax of the whole value (serde_json does, to find where it ends) and
    /// that it is an object; builds nothing of it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(serde::de::Error::custom(Self::NOT_AN_OBJECT));
        }
        Ok(Metadata(raw))
    }
}

/// What kind of record a key names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Collection,
    Document,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Collection => "c",
            Kind::Document => "d",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "c" => Some(Kind::Collection),
            "d" => Some(Kind::Document),
            _ => None,
        }
    }
}

/// Identifies one replicated record: a collection (`id` empty) or a document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    pub collection: String,
    pub kind: Kind,
    pub id: String,
}

impl RecordKey {
    pub fn collection(name: &str) -> Self {
        RecordKey {
            collection: name.to_string(),
            kind: Kind::Collection,
            id: String::new(),
        }
    }
    pub fn document(collection: &str, id: &str) -> Self {
        RecordKey {
            collection: collection.to_string(),
            kind: Kind::Document,
            id: id.to_string(),
        }
    }
}

/// The state of a record; [`Value::Deleted`] is a tombstone.
///
/// On the wire and in the store: `{"kind": "collection" | "document" | "deleted", ...}`.
/// Deserialised by hand (see [`crate::wire::codec`]): serde's derive for an internally
/// tagged enum buffers every field of every record into an intermediate tree first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Value {
    Collection {
        settings: CollectionSettings,
        #[serde(default, skip_serializing_if = "FieldStamps::is_empty")]
        stamps: FieldStamps,
    },
    Document {
        document: Document,
    },
    Deleted,
}

/// A losing version kept after a concurrent update. Part of the replicated state (merged by
/// set union keyed by `(hlc, node)`), so every node that learns of the record learns of its
/// conflicts too, whatever order it saw the versions in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConflictVersion {
    pub hlc: Hlc,
    pub node: NodeId,
    #[schema(schema_with = Value::schema)]
    pub value: Value,
}

impl ConflictVersion {
    pub fn order_key(&self) -> (Hlc, NodeId) {
        (self.hlc, self.node)
    }
}

/// How many losing versions a record keeps (the greatest by `(hlc, node)`).
pub const MAX_CONFLICTS_PER_RECORD: usize = 16;

/// The operation a change carries (on the wire: `op` and its fields, inline in the change).
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeBody {
    CollectionCreate {
        collection: String,
        settings: CollectionSettings,
        stamps: FieldStamps,
    },
    CollectionDelete {
        collection: String,
    },
    DocumentInsert {
        collection: String,
        document: Document,
    },
    DocumentUpdate {
        collection: String,
        document: Document,
    },
    DocumentDelete {
        collection: String,
        id: String,
    },
}

impl ChangeBody {
    pub fn key(&self) -> RecordKey {
        match self {
            ChangeBody::CollectionCreate { collection, .. }
            | ChangeBody::CollectionDelete { collection } => RecordKey::collection(collection),
            ChangeBody::DocumentInsert {
                collection,
                document,
            }
            | ChangeBody::DocumentUpdate {
                collection,
                document,
            } => RecordKey::document(collection, &document.id),
            ChangeBody::DocumentDelete { collection, id } => RecordKey::document(collection, id),
        }
    }

    pub fn collection(&self) -> &str {
        match self {
            ChangeBody::CollectionCreate { collection, .. }
            | ChangeBody::CollectionDelete { collection }
            | ChangeBody::DocumentInsert { collection, .. }
            | ChangeBody::DocumentUpdate { collection, .. }
            | ChangeBody::DocumentDelete { collection, .. } => collection,
        }
    }

    /// The record state this change sets.
    pub fn value(&self) -> Value {
        match self {
            ChangeBody::CollectionCreate {
                settings, stamps, ..
            } => Value::Collection {
                settings: settings.clone(),
                stamps: stamps.clone(),
            },
            ChangeBody::DocumentInsert { document, .. }
            | ChangeBody::DocumentUpdate { document, .. } => Value::Document {
                document: document.clone(),
            },
            ChangeBody::CollectionDelete { .. } | ChangeBody::DocumentDelete { .. } => {
                Value::Deleted
            }
        }
    }

    /// The record state this change sets, without copying it.
    pub fn into_value(self) -> Value {
        match self {
            ChangeBody::CollectionCreate {
                settings, stamps, ..
            } => Value::Collection { settings, stamps },
            ChangeBody::DocumentInsert { document, .. }
            | ChangeBody::DocumentUpdate { document, .. } => Value::Document { document },
            ChangeBody::CollectionDelete { .. } | ChangeBody::DocumentDelete { .. } => {
                Value::Deleted
            }
        }
    }

    /// Builds the body for a record's state. `existed` picks Insert vs Update.
    pub fn from_value(key: &RecordKey, value: Value, existed: bool) -> ChangeBody {
        let collection = key.collection.clone();
        match (key.kind, value) {
            (Kind::Collection, Value::Collection { settings, stamps }) => {
                ChangeBody::CollectionCreate {
                    collection,
                    settings,
                    stamps,
                }
            }
            (Kind::Collection, _) => ChangeBody::CollectionDelete { collection },
            (Kind::Document, Value::Document { document }) if existed => {
                ChangeBody::DocumentUpdate {
                    collection,
                    document,
                }
            }
            (Kind::Document, Value::Document { document }) => ChangeBody::DocumentInsert {
                collection,
                document,
            },
            (Kind::Document, _) => ChangeBody::DocumentDelete {
                collection,
                id: key.id.clone(),
            },
        }
    }
}

/// One entry of a node's change log: the latest state of one record.
///
/// Wire shape: `{"cursor", "version", "op", "collection", <the op's fields>, "conflicts"?}`
/// (the [`ChangeBody`] fields inline), (de)serialised by hand in [`crate::wire::codec`].
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Position in the sending node's log (its commit cursor); opaque to the receiver.
    pub cursor: Hlc,
    pub version: Version,
    pub body: ChangeBody,
    pub conflicts: Vec<ConflictVersion>,
}

/// A stored record: key, version, state and retained conflicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: RecordKey,
    pub version: Version,
    pub value: Value,
    pub conflicts: Vec<ConflictVersion>,
    /// Commit cursor of the record's latest log entry on this node.
    pub cursor: Hlc,
    /// Whether the record was live before its latest write (Insert vs Update).
    pub existed: bool,
}

impl Record {
    pub fn to_change(&self) -> Change {
        Change {
            cursor: self.cursor,
            version: self.version.clone(),
            body: ChangeBody::from_value(&self.key, self.value.clone(), self.existed),
            conflicts: self.conflicts.clone(),
        }
    }
}

/// Collection names: 1 to 128 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 128 || !ok_chars || name.starts_with(['.', '-']) {
        return Err(format!(
            "'{}' is not a valid collection name: use 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' or '-'",
            name.chars().take(140).collect::<String>()
        ));
    }
    Ok(())
}

/// Document ids: 1 to 512 bytes, no control characters and no '/'.
pub fn validate_doc_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 512 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(format!(
            "'{}' is not a valid document id: use 1 to 512 bytes without '/' or control characters",
            id.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(u16, u64)]) -> VersionVector {
        VersionVector(entries.iter().map(|(n, h)| (NodeId(*n), Hlc(*h))).collect())
    }

    #[test]
    fn version_vector_causality() {
        assert_eq!(vv(&[(1, 5)]).compare(&vv(&[(1, 5)])), Causality::Equal);
        assert_eq!(vv(&[(1, 6)]).compare(&vv(&[(1, 5)])), Causality::Dominates);
        assert_eq!(
            vv(&[(1, 5)]).compare(&vv(&[(1, 5), (2, 1)])),
            Causality::DominatedBy
        );
        assert_eq!(
            vv(&[(1, 6)]).compare(&vv(&[(1, 5), (2, 1)])),
            Causality::Concurrent
        );
        assert_eq!(
            vv(&[(1, 6)]).join(&vv(&[(1, 5), (2, 1)])),
            vv(&[(1, 6), (2, 1)])
        );
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(validate_name("docs-1.v2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(".hidden").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_doc_id("x:1").is_ok());
        assert!(validate_doc_id("a/b").is_err());
        assert!(validate_doc_id("a\nb").is_err());
    }

    /// Metadata must be a JSON object, in documents that arrive by sync as well as from
    /// the data API; the error says so.
    #[test]
    fn metadata_that_is_not_an_object_is_refused() {
        for bad in ["[1]", "null", "\"text\"", "3", "true"] {
            let doc = format!(r#"{{"id":"d1","content":"x","metadata":{bad}}}"#);
            let err = serde_json::from_str::<Document>(&doc)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("metadata must be a JSON object"),
                "{bad}: {err}"
            );
            let tree: serde_json::Value = serde_json::from_str(bad).unwrap();
            assert_eq!(
                Metadata::from_value(tree).unwrap_err(),
                "metadata must be a JSON object"
            );
        }
        // Not JSON at all: serde_json's own syntax error, and nothing is built.
        assert!(
            serde_json::from_str::<Document>(r#"{"id":"d","content":"x","metadata":{"a":}}"#)
                .is_err()
        );
    }

    /// Local writes are written in serde_json's compact form, keys in order, whatever
    /// spacing and order the client sent.
    #[test]
    fn local_metadata_is_written_compactly() {
        let tree: serde_json::Value =
            serde_json::from_str(r#"{ "b" : [ 1, 2 ], "a" : { "y": null } }"#).unwrap();
        let m = Metadata::from_value(tree.clone()).unwrap();
        assert_eq!(m.as_str(), r#"{"a":{"y":null},"b":[1,2]}"#);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(m.as_str()).unwrap(),
            tree
        );
    }

    #[test]
    fn settings_validation_names_the_field() {
        let mut s = CollectionSettings::default();
        s.validate().unwrap();
        s.search.hybrid_alpha = 1.5;
        assert!(s.validate().unwrap_err().contains("hybrid_alpha"));
        let mut s = CollectionSettings::default();
        s.chunking.overlap_tokens = 600;
        assert!(s.validate().unwrap_err().contains("overlap_tokens"));
    }
}
