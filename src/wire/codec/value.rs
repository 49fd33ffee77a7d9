//! Hand-written `Deserialize` for [`Value`] (same shape as the derived, internally tagged
//! form; fields may come in any order; unknown fields are ignored), and the fast encoder of a
//! document's stored value.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use super::keys::{Key, Known, Name};
use crate::model::{CollectionSettings, Document, FieldStamps, Value};

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

/// The JSON of `Value::Document { document }` without building (or cloning into) one:
/// byte for byte what `serde_json::to_string` writes for it.
///
/// Written by hand around serde_json, which escapes a string byte by byte into a growing
/// buffer: a string with nothing to escape is copied whole; anything else, and the
/// embedding, go through serde_json; the metadata is already JSON text.
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
