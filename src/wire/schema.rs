//! OpenAPI schemas of the wire types whose serde is hand-written (HLCs and node ids as hex,
//! version vectors, raw metadata, changes). The derived types get theirs from
//! `#[derive(ToSchema)]` next to their serde attributes; these are written here as the JSON
//! Schema they are. tests/openapi.rs checks every response a fuzzed node gives against them.

use std::borrow::Cow;

use serde_json::json;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::hlc::Hlc;
use crate::model::{
    Change, CollectionSettings, ConflictVersion, Document, FieldStamps, Metadata, NodeId, Stamp,
    Version, VersionVector,
};

/// A collection name, as [`crate::model::validate_name`] accepts it.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$";

/// A document id, as [`crate::model::validate_doc_id`] accepts it: no `/` and no control
/// characters. The schema's 128 characters keep within the 512 bytes of UTF-8 allowed.
pub const DOC_ID_PATTERN: &str = "^[^/\\u0000-\\u001f\\u007f-\\u009f]{1,128}$";

pub const HLC_PATTERN: &str = "^[0-9a-f]{16}$";
pub const NODE_ID_PATTERN: &str = "^[0-9a-f]{4}$";

/// A schema written as JSON (utoipa's schema types deserialise from it).
pub fn schema(value: serde_json::Value) -> RefOr<Schema> {
    let schema: RefOr<Schema> = match serde_json::from_value(value.clone()) {
        Ok(s) => s,
        Err(e) => panic!("not a schema ({e}): {value}"),
    };
    // utoipa drops what it has no field for; a schema must say all it was written to say.
    debug_assert_eq!(serde_json::to_value(&schema).ok(), Some(value));
    schema
}

fn reference(name: &str) -> serde_json::Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Registers `T` and what it references (as derived `schemas` do for their fields).
fn register<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
    out.push((T::name().into_owned(), T::schema()));
    T::schemas(out);
}

impl PartialSchema for Hlc {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "string",
            "pattern": HLC_PATTERN,
            "description": "A hybrid logical timestamp: 16 lowercase hex digits (48 bits of wall-clock ms, 16 of logical counter); string order is time order.",
            "examples": ["0190a1b2c3d40001"],
        }))
    }
}
impl ToSchema for Hlc {}

impl PartialSchema for NodeId {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "string",
            "pattern": NODE_ID_PATTERN,
            "description": "A node's 16-bit id: 4 lowercase hex digits.",
        }))
    }
}
impl ToSchema for NodeId {}

/// An object keyed by node id (version vectors, applied positions).
pub fn node_map(value: &str) -> RefOr<Schema> {
    schema(json!({
        "type": "object",
        "propertyNames": {"type": "string", "pattern": NODE_ID_PATTERN},
        "additionalProperties": reference(value),
    }))
}

/// `NodeStatus::applied`.
pub fn applied() -> RefOr<Schema> {
    node_map("Hlc")
}

impl PartialSchema for VersionVector {
    fn schema() -> RefOr<Schema> {
        node_map("Hlc")
    }
}
impl ToSchema for VersionVector {
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        register::<Hlc>(out);
    }
}

impl PartialSchema for Metadata {
    fn schema() -> RefOr<Schema> {
        schema(json!({"type": "object", "description": "Any JSON object."}))
    }
}
impl ToSchema for Metadata {}

impl PartialSchema for FieldStamps {
    fn schema() -> RefOr<Schema> {
        schema(json!({
            "type": "object",
            "description": "Per settings field (a JSON pointer), the write that last set it.",
            "additionalProperties": reference("Stamp"),
        }))
    }
}
impl ToSchema for FieldStamps {
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        register::<Stamp>(out);
    }
}

/// One op of a change: its `op` constant and its fields besides `collection`.
fn change_variant(op: &str, fields: serde_json::Value, required: &[&str]) -> serde_json::Value {
    let mut properties = json!({
        "cursor": reference("Hlc"),
        "version": reference("Version"),
        "op": {"type": "string", "enum": [op]},
        "collection": {"type": "string", "pattern": NAME_PATTERN},
        "conflicts": {"type": "array", "items": reference("ConflictVersion")},
    });
    if let (Some(p), Some(f)) = (properties.as_object_mut(), fields.as_object()) {
        p.extend(f.clone());
    }
    let mut all = vec!["cursor", "version", "op", "collection"];
    all.extend_from_slice(required);
    json!({
        "type": "object",
        "properties": properties,
        "required": all,
        "additionalProperties": false,
    })
}

impl PartialSchema for Change {
    fn schema() -> RefOr<Schema> {
        let document = json!({"document": reference("Document")});
        schema(json!({
            "description": "One entry of a node's change log: the latest state of one record.",
            "oneOf": [
                change_variant(
                    "CollectionCreate",
                    json!({"settings": reference("CollectionSettings"), "stamps": reference("FieldStamps")}),
                    &["settings"],
                ),
                change_variant("CollectionDelete", json!({}), &[]),
                change_variant("DocumentInsert", document.clone(), &["document"]),
                change_variant("DocumentUpdate", document, &["document"]),
                change_variant(
                    "DocumentDelete",
                    json!({"id": {"type": "string", "pattern": DOC_ID_PATTERN}}),
                    &["id"],
                ),
            ],
        }))
    }
}
impl ToSchema for Change {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Change")
    }
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        register::<Hlc>(out);
        register::<Version>(out);
        register::<Document>(out);
        register::<CollectionSettings>(out);
        register::<FieldStamps>(out);
        register::<ConflictVersion>(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hand-written schema is one utoipa reads back as written (`schema` checks that
    /// nothing was dropped).
    #[test]
    fn hand_written_schemas_read_back_as_written() {
        let all = [
            ("Hlc", Hlc::schema()),
            ("NodeId", NodeId::schema()),
            ("VersionVector", VersionVector::schema()),
            ("Metadata", Metadata::schema()),
            ("FieldStamps", FieldStamps::schema()),
            ("Change", Change::schema()),
        ];
        for (name, s) in all {
            let json = serde_json::to_value(&s).unwrap();
            assert!(json.is_object(), "{name}: {json}");
        }
    }
}
