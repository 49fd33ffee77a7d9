//! The replicated data: collections, documents, their versions, and the changes that carry
//! them between nodes.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkingSettings {
    pub max_tokens: u32,
    pub min_tokens: u32,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSettings {
    pub top_k: u32,
    pub hybrid: bool,
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectionSettings {
    pub chunking: ChunkingSettings,
    pub search: SearchSettings,
    pub embedding: EmbeddingSettings,
}

/// When a settings field was last written. Settings merge as per-field last-writer-wins
/// registers: each unit keeps the value with the greatest stamp, which is commutative,
/// associative and idempotent, and respects causality (a later write has a greater HLC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
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
/// with, and is stored and served again byte for byte. Parsing it into a tree of maps only to
/// write the same text back, and freeing that tree, was about a tenth of a pulling node's
/// CPU. Local writes arrive as [`Metadata::from_value`], which writes serde_json's compact
/// form, so every version's text is fixed where it was written and the same on every node.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// The state of a record; `None` in a [`Record`] is a tombstone.
///
/// On the wire and in the store: `{"kind": "collection" | "document" | "deleted", ...}`.
/// Deserialised by hand (see [`value_serde`]): serde's derive for an internally tagged enum
/// buffers every field of every record into an intermediate tree first.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

impl Value {
    /// The JSON of `Value::Document { document }` without building (or cloning into) one:
    /// byte for byte what `serde_json::to_string` writes for it.
    ///
    /// Written by hand around serde_json: the text is most of a document, and serde_json
    /// escapes a string byte by byte into a buffer that grows as it goes, which made this
    /// about a third of decoding a pulled page. A string with nothing to escape is copied
    /// whole; anything else, and the metadata and embedding, go through serde_json.
    pub fn document_json(document: &Document) -> serde_json::Result<String> {
        // Destructured whole: a field added to `Document` fails to compile here until it is
        // written below too.
        let Document {
            id,
            content,
            metadata,
            embedding,
        } = document;
        let embedding_len = embedding.as_ref().map_or(0, |e| 16 + 16 * e.len());
        let mut out = Vec::with_capacity(96 + id.len() + content.len() + embedding_len + 64);
        out.extend_from_slice(br#"{"kind":"document","document":{"id":"#);
        json_str(&mut out, id)?;
        out.extend_from_slice(br#","content":"#);
        json_str(&mut out, content)?;
        out.extend_from_slice(br#","metadata":"#);
        out.extend_from_slice(metadata.as_str().as_bytes());
        if let Some(embedding) = embedding {
            out.extend_from_slice(br#","embedding":"#);
            serde_json::to_writer(&mut out, embedding)?;
        }
        out.extend_from_slice(b"}}");
        // Only whole UTF-8 strings and serde_json's output went in.
        Ok(String::from_utf8(out).expect("JSON written from strings is UTF-8"))
    }
}

/// Appends `s` as a JSON string exactly as serde_json writes it: quoted as it is when no
/// byte needs an escape (serde_json escapes only `"`, `\` and control characters), else by
/// serde_json itself.
fn json_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    // No early exit, so that the compiler checks many bytes at a time.
    let escape = s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if escape {
        return serde_json::to_writer(out, s);
    }
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

/// A losing version kept after a concurrent update. Part of the replicated state (merged by
/// set union keyed by `(hlc, node)`), so every node that learns of the record learns of its
/// conflicts too, whatever order it saw the versions in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictVersion {
    pub hlc: Hlc,
    pub node: NodeId,
    pub value: Value,
}

impl ConflictVersion {
    pub fn order_key(&self) -> (Hlc, NodeId) {
        (self.hlc, self.node)
    }
}

/// How many losing versions a record keeps (the greatest by `(hlc, node)`).
pub const MAX_CONFLICTS_PER_RECORD: usize = 16;

/// The operation a change carries, tagged by `op` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum ChangeBody {
    CollectionCreate {
        collection: String,
        settings: CollectionSettings,
        #[serde(default, skip_serializing_if = "FieldStamps::is_empty")]
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
/// (the [`ChangeBody`] fields inline). (De)serialised by hand in [`change_serde`]: serde's
/// `flatten` would buffer every change into an intermediate tree, which was the largest
/// single cost of decoding a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Position in the sending node's log (its commit cursor); opaque to the receiver.
    pub cursor: Hlc,
    pub version: Version,
    pub body: ChangeBody,
    pub conflicts: Vec<ConflictVersion>,
}

/// Map keys of hand-written deserialisers, read without allocating.
mod field_key {
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, Visitor};

    /// The known key, or `Other` for one to skip.
    pub struct Key(pub Option<&'static str>);

    pub struct KeyVisitor(pub &'static [&'static str]);

    impl<'de> Visitor<'de> for KeyVisitor {
        type Value = Key;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a field name")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
            Ok(Key(self.0.iter().find(|k| **k == v).copied()))
        }
    }

    /// Seeds a key read with the list of known names.
    pub struct Known(pub &'static [&'static str]);

    impl<'de> serde::de::DeserializeSeed<'de> for Known {
        type Value = Key;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
            d.deserialize_identifier(KeyVisitor(self.0))
        }
    }

    /// An op or kind name, read without allocating.
    pub struct Name(pub Option<&'static str>, pub String);

    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Name;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
                    const NAMES: &[&str] = &[
                        "CollectionCreate",
                        "CollectionDelete",
                        "DocumentInsert",
                        "DocumentUpdate",
                        "DocumentDelete",
                        "collection",
                        "document",
                        "deleted",
                    ];
                    Ok(match NAMES.iter().find(|n| **n == v) {
                        Some(n) => Name(Some(n), String::new()),
                        None => Name(None, v.to_string()),
                    })
                }
            }
            d.deserialize_str(V)
        }
    }

    impl Name {
        pub fn as_str(&self) -> &str {
            self.0.unwrap_or(&self.1)
        }
    }
}

/// Hand-written `Deserialize` for [`Value`] (same shape as the derived, internally tagged
/// form; fields may come in any order; unknown fields are ignored).
mod value_serde {
    use std::fmt;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde::Deserialize;

    use super::field_key::{Key, Known, Name};
    use super::{CollectionSettings, Document, FieldStamps, Value};

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(ValueVisitor)
        }
    }

    struct ValueVisitor;

    impl<'de> Visitor<'de> for ValueVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a record value: an object with \"kind\"")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            const KEYS: &[&str] = &["kind", "settings", "stamps", "document"];
            let mut kind: Option<Name> = None;
            let mut settings: Option<CollectionSettings> = None;
            let mut stamps: Option<FieldStamps> = None;
            let mut document: Option<Document> = None;
            while let Some(Key(key)) = map.next_key_seed(Known(KEYS))? {
                match key.unwrap_or("") {
                    "kind" => {
                        if kind.is_some() {
                            return Err(de::Error::duplicate_field("kind"));
                        }
                        kind = Some(map.next_value()?);
                    }
                    "settings" => {
                        if settings.is_some() {
                            return Err(de::Error::duplicate_field("settings"));
                        }
                        settings = Some(map.next_value()?);
                    }
                    "stamps" => {
                        if stamps.is_some() {
                            return Err(de::Error::duplicate_field("stamps"));
                        }
                        stamps = Some(map.next_value()?);
                    }
                    "document" => {
                        if document.is_some() {
                            return Err(de::Error::duplicate_field("document"));
                        }
                        document = Some(map.next_value()?);
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            match kind.as_ref().map(Name::as_str) {
                Some("collection") => Ok(Value::Collection {
                    settings: settings.ok_or_else(|| de::Error::missing_field("settings"))?,
                    stamps: stamps.unwrap_or_default(),
                }),
                Some("document") => Ok(Value::Document {
                    document: document.ok_or_else(|| de::Error::missing_field("document"))?,
                }),
                Some("deleted") => Ok(Value::Deleted),
                Some(other) => Err(de::Error::unknown_variant(
                    other,
                    &["collection", "document", "deleted"],
                )),
                None => Err(de::Error::missing_field("kind")),
            }
        }
    }
}

/// Hand-written `Serialize` / `Deserialize` for [`Change`].
mod change_serde {
    use std::fmt;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use serde::{Deserialize, Serialize};

    use super::field_key::{Key, Known, Name};
    use super::{
        Change, ChangeBody, CollectionSettings, ConflictVersion, Document, FieldStamps, Version,
    };
    use crate::hlc::Hlc;

    const OPS: &[&str] = &[
        "CollectionCreate",
        "CollectionDelete",
        "DocumentInsert",
        "DocumentUpdate",
        "DocumentDelete",
    ];

    impl Serialize for Change {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("cursor", &self.cursor)?;
            m.serialize_entry("version", &self.version)?;
            match &self.body {
                ChangeBody::CollectionCreate {
                    collection,
                    settings,
                    stamps,
                } => {
                    m.serialize_entry("op", "CollectionCreate")?;
                    m.serialize_entry("collection", collection)?;
                    m.serialize_entry("settings", settings)?;
                    if !stamps.is_empty() {
                        m.serialize_entry("stamps", stamps)?;
                    }
                }
                ChangeBody::CollectionDelete { collection } => {
                    m.serialize_entry("op", "CollectionDelete")?;
                    m.serialize_entry("collection", collection)?;
                }
                ChangeBody::DocumentInsert {
                    collection,
                    document,
                } => {
                    m.serialize_entry("op", "DocumentInsert")?;
                    m.serialize_entry("collection", collection)?;
                    m.serialize_entry("document", document)?;
                }
                ChangeBody::DocumentUpdate {
                    collection,
                    document,
                } => {
                    m.serialize_entry("op", "DocumentUpdate")?;
                    m.serialize_entry("collection", collection)?;
                    m.serialize_entry("document", document)?;
                }
                ChangeBody::DocumentDelete { collection, id } => {
                    m.serialize_entry("op", "DocumentDelete")?;
                    m.serialize_entry("collection", collection)?;
                    m.serialize_entry("id", id)?;
                }
            }
            if !self.conflicts.is_empty() {
                m.serialize_entry("conflicts", &self.conflicts)?;
            }
            m.end()
        }
    }

    impl<'de> Deserialize<'de> for Change {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(ChangeVisitor)
        }
    }

    struct ChangeVisitor;

    fn set<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
        map: &mut A,
        slot: &mut Option<T>,
        name: &'static str,
    ) -> Result<(), A::Error> {
        if slot.is_some() {
            return Err(de::Error::duplicate_field(name));
        }
        *slot = Some(map.next_value()?);
        Ok(())
    }

    impl<'de> Visitor<'de> for ChangeVisitor {
        type Value = Change;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a change: an object with \"version\" and \"op\"")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Change, A::Error> {
            let mut cursor: Option<Hlc> = None;
            let mut version: Option<Version> = None;
            const KEYS: &[&str] = &[
                "cursor",
                "version",
                "op",
                "collection",
                "settings",
                "stamps",
                "document",
                "id",
                "conflicts",
            ];
            let mut op: Option<Name> = None;
            let mut collection: Option<String> = None;
            let mut settings: Option<CollectionSettings> = None;
            let mut stamps: Option<FieldStamps> = None;
            let mut document: Option<Document> = None;
            let mut id: Option<String> = None;
            let mut conflicts: Option<Vec<ConflictVersion>> = None;
            while let Some(Key(key)) = map.next_key_seed(Known(KEYS))? {
                match key.unwrap_or("") {
                    "cursor" => set(&mut map, &mut cursor, "cursor")?,
                    "version" => set(&mut map, &mut version, "version")?,
                    "op" => set(&mut map, &mut op, "op")?,
                    "collection" => set(&mut map, &mut collection, "collection")?,
                    "settings" => set(&mut map, &mut settings, "settings")?,
                    "stamps" => set(&mut map, &mut stamps, "stamps")?,
                    "document" => set(&mut map, &mut document, "document")?,
                    "id" => set(&mut map, &mut id, "id")?,
                    "conflicts" => set(&mut map, &mut conflicts, "conflicts")?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            let op = op.ok_or_else(|| de::Error::missing_field("op"))?;
            let collection = || collection.ok_or_else(|| de::Error::missing_field("collection"));
            let document = || document.ok_or_else(|| de::Error::missing_field("document"));
            let body = match op.as_str() {
                "CollectionCreate" => ChangeBody::CollectionCreate {
                    collection: collection()?,
                    settings: settings.ok_or_else(|| de::Error::missing_field("settings"))?,
                    stamps: stamps.unwrap_or_default(),
                },
                "CollectionDelete" => ChangeBody::CollectionDelete {
                    collection: collection()?,
                },
                "DocumentInsert" => ChangeBody::DocumentInsert {
                    collection: collection()?,
                    document: document()?,
                },
                "DocumentUpdate" => ChangeBody::DocumentUpdate {
                    collection: collection()?,
                    document: document()?,
                },
                "DocumentDelete" => ChangeBody::DocumentDelete {
                    collection: collection()?,
                    id: id.ok_or_else(|| de::Error::missing_field("id"))?,
                },
                other => return Err(de::Error::unknown_variant(other, OPS)),
            };
            Ok(Change {
                cursor: cursor.unwrap_or_default(),
                version: version.ok_or_else(|| de::Error::missing_field("version"))?,
                body,
                conflicts: conflicts.unwrap_or_default(),
            })
        }
    }
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
    fn change_wire_shape_is_tagged() {
        let c = Change {
            cursor: Hlc(1),
            version: Version {
                hlc: Hlc(2),
                node: NodeId(0xab),
                vv: vv(&[(0xab, 2)]),
            },
            body: ChangeBody::DocumentDelete {
                collection: "docs".into(),
                id: "d1".into(),
            },
            conflicts: vec![],
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["op"], "DocumentDelete");
        assert_eq!(json["version"]["node"], "00ab");
        assert_eq!(json["version"]["vv"]["00ab"], "0000000000000002");
        let back: Change = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
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

    /// Metadata that arrives in a document leaves in it byte for byte: the text every
    /// node stores for a version is the text its origin wrote, so nodes agree on it.
    #[test]
    fn metadata_is_kept_as_it_arrived() {
        let metadata = r#"{"z":[1,{"c":"\u00e9 \"q\""}],"a":1.50,"m":{}}"#;
        let doc = format!(r#"{{"id":"d1","content":"x","metadata":{metadata}}}"#);
        let parsed: Document = serde_json::from_str(&doc).unwrap();
        assert_eq!(parsed.metadata.as_str(), metadata);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), doc);
        let stored = Value::document_json(&parsed).unwrap();
        let value = Value::Document { document: parsed };
        assert!(stored.contains(metadata), "{stored}");
        assert_eq!(serde_json::to_string(&value).unwrap(), stored);
        // Through a JSON tree as well (serde_json::from_value).
        let tree: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let from_tree: Document = serde_json::from_value(tree).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(from_tree.metadata.as_str()).unwrap(),
            serde_json::from_str::<serde_json::Value>(metadata).unwrap()
        );
        // Missing metadata is the empty object.
        let bare: Document = serde_json::from_str(r#"{"id":"d2","content":"y"}"#).unwrap();
        assert_eq!(bare.metadata.as_str(), "{}");
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

    /// The store keeps `document_json`'s output as the stored value: it must be exactly
    /// what serde writes for the value, embedding and escapes included.
    #[test]
    fn document_json_is_the_values_serde_json() {
        // Every ASCII character (escaped or not) alone and inside text, non-ASCII, the
        // empty string, and text with nothing to escape.
        let mut texts: Vec<String> = (0u8..128).map(|b| char::from(b).to_string()).collect();
        texts.extend((0u8..128).map(|b| format!("ab{}cd\u{7f}", char::from(b))));
        texts.extend([
            "".into(),
            "line\nüñí \u{1}".into(),
            "plain text, / é 漢字".into(),
        ]);
        for (i, text) in texts.into_iter().enumerate() {
            for embedding in [None, Some(vec![0.5f32, -1.0, 1e-7])] {
                let document = Document {
                    id: if i % 2 == 0 {
                        "d\"1".into()
                    } else {
                        format!("doc-{i}")
                    },
                    content: text.clone(),
                    metadata: Metadata::from_value(
                        serde_json::json!({"b": [1, "x\t"], "a": {"z": null}, "n": 1.5}),
                    )
                    .unwrap(),
                    embedding,
                };
                let fast = Value::document_json(&document).unwrap();
                let value = Value::Document { document };
                assert_eq!(
                    fast,
                    serde_json::to_string(&value).unwrap(),
                    "text {text:?}"
                );
            }
        }
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
