//! Hand-written serde for the change log's hot types, where serde's derive was measured too
//! slow (it buffers internally tagged and flattened forms into an intermediate tree). Each is
//! tested against what the derive writes for the same shape.

mod change;
mod keys;
mod value;

pub use value::document_json;

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::hlc::Hlc;
    use crate::model::*;

    fn vv(entries: &[(u16, u64)]) -> VersionVector {
        VersionVector(entries.iter().map(|(n, h)| (NodeId(*n), Hlc(*h))).collect())
    }

    /// The shape the hand-written `Change` codec keeps, written with serde's derive: the body
    /// flattened into the change, tagged by `op`, empty stamps and conflicts left out.
    #[derive(Serialize, Deserialize)]
    struct DerivedChange {
        cursor: Hlc,
        version: Version,
        #[serde(flatten)]
        body: DerivedBody,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        conflicts: Vec<ConflictVersion>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "op")]
    enum DerivedBody {
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

    impl From<&Change> for DerivedChange {
        fn from(c: &Change) -> Self {
            let body = match c.body.clone() {
                ChangeBody::CollectionCreate {
                    collection,
                    settings,
                    stamps,
                } => DerivedBody::CollectionCreate {
                    collection,
                    settings,
                    stamps,
                },
                ChangeBody::CollectionDelete { collection } => {
                    DerivedBody::CollectionDelete { collection }
                }
                ChangeBody::DocumentInsert {
                    collection,
                    document,
                } => DerivedBody::DocumentInsert {
                    collection,
                    document,
                },
                ChangeBody::DocumentUpdate {
                    collection,
                    document,
                } => DerivedBody::DocumentUpdate {
                    collection,
                    document,
                },
                ChangeBody::DocumentDelete { collection, id } => {
                    DerivedBody::DocumentDelete { collection, id }
                }
            };
            DerivedChange {
                cursor: c.cursor,
                version: c.version.clone(),
                body,
                conflicts: c.conflicts.clone(),
            }
        }
    }

    fn every_kind_of_change() -> Vec<Change> {
        let version = Version {
            hlc: Hlc::new(1_700_000_000_000, 2),
            node: NodeId(0xab),
            vv: vv(&[(0xab, 7), (0x01, 3)]),
        };
        let document = Document {
            id: "d\"1".into(),
            content: "line\n\u{1} é".into(),
            metadata: Metadata::from_value(serde_json::json!({"b": [1], "a": null})).unwrap(),
            embedding: Some(vec![0.25, -1.0]),
        };
        let mut settings = CollectionSettings::default();
        settings.embedding.model = Some("m".into());
        let stamps = FieldStamps(
            [(
                "embedding".to_string(),
                Stamp {
                    hlc: Hlc::new(5, 0),
                    node: NodeId(1),
                },
            )]
            .into(),
        );
        let bodies = vec![
            ChangeBody::CollectionCreate {
                collection: "c".into(),
                settings: settings.clone(),
                stamps: FieldStamps::default(),
            },
            ChangeBody::CollectionCreate {
                collection: "c".into(),
                settings,
                stamps,
            },
            ChangeBody::CollectionDelete {
                collection: "c".into(),
            },
            ChangeBody::DocumentInsert {
                collection: "c".into(),
                document: document.clone(),
            },
            ChangeBody::DocumentUpdate {
                collection: "c".into(),
                document: document.clone(),
            },
            ChangeBody::DocumentDelete {
                collection: "c".into(),
                id: "d1".into(),
            },
        ];
        let conflicts = vec![
            ConflictVersion {
                hlc: Hlc::new(4, 1),
                node: NodeId(2),
                value: Value::Document { document },
            },
            ConflictVersion {
                hlc: Hlc::new(3, 0),
                node: NodeId(3),
                value: Value::Deleted,
            },
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Change {
                cursor: Hlc::new(1_700_000_000_100 + i as u64, 0),
                version: version.clone(),
                body,
                conflicts: if i % 2 == 0 {
                    vec![]
                } else {
                    conflicts.clone()
                },
            })
            .collect()
    }

    #[test]
    fn changes_are_written_byte_for_byte_as_the_derived_form() {
        for c in every_kind_of_change() {
            let hand = serde_json::to_string(&c).unwrap();
            assert_eq!(
                hand,
                serde_json::to_string(&DerivedChange::from(&c)).unwrap()
            );
            let back: Change = serde_json::from_str(&hand).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn changes_read_fields_in_any_order_and_skip_unknown_ones() {
        for c in every_kind_of_change() {
            let tree = serde_json::to_value(&c).unwrap();
            let mut fields: Vec<(String, serde_json::Value)> =
                tree.as_object().unwrap().clone().into_iter().collect();
            fields.reverse();
            fields.push(("added_later".into(), serde_json::json!({"x": [1]})));
            let text = format!(
                "{{{}}}",
                fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), c, "{text}");
        }
    }

    #[test]
    fn a_change_without_what_its_op_needs_names_the_missing_field() {
        let e = serde_json::from_str::<Change>(r#"{"version":{"hlc":"0000000000000001","node":"0001","vv":{}},"op":"DocumentInsert","collection":"c"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `document`"), "{e}");
        let e = serde_json::from_str::<Change>(r#"{"version":{"hlc":"0000000000000001","node":"0001","vv":{}},"op":"Upsert","collection":"c"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `Upsert`"), "{e}");
    }

    #[test]
    fn values_read_back_what_the_derive_writes() {
        for c in every_kind_of_change() {
            for v in
                std::iter::once(c.body.value()).chain(c.conflicts.iter().map(|x| x.value.clone()))
            {
                let text = serde_json::to_string(&v).unwrap();
                assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v, "{text}");
            }
        }
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

    /// Metadata that arrives in a document leaves in it byte for byte: the text every
    /// node stores for a version is the text its origin wrote, so nodes agree on it.
    #[test]
    fn metadata_is_kept_as_it_arrived() {
        let metadata = r#"{"z":[1,{"c":"\u00e9 \"q\""}],"a":1.50,"m":{}}"#;
        let doc = format!(r#"{{"id":"d1","content":"x","metadata":{metadata}}}"#);
        let parsed: Document = serde_json::from_str(&doc).unwrap();
        assert_eq!(parsed.metadata.as_str(), metadata);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), doc);
        let stored = document_json(&parsed).unwrap();
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
                let fast = document_json(&document).unwrap();
                let value = Value::Document { document };
                assert_eq!(
                    fast,
                    serde_json::to_string(&value).unwrap(),
                    "text {text:?}"
                );
            }
        }
    }
}
