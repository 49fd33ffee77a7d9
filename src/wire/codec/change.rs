//! Hand-written `Serialize` / `Deserialize` for [`Change`]: `{"cursor", "version", "op",
//! "collection", <the op's fields>, "conflicts"?}`, the body's fields inline. serde's
//! `flatten` would buffer every change into an intermediate tree first.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::keys::{Key, Known, Name};
use crate::hlc::Hlc;
use crate::model::{
    Change, ChangeBody, CollectionSettings, ConflictVersion, Document, FieldStamps, Version,
};

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
