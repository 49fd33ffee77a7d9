//! Map keys and tag names of the hand-written deserialisers, read without allocating.

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
