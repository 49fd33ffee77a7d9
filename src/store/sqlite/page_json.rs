//! The byte-level page encoder: a page of the change log written straight from `records`
//! rows as the same JSON `serde_json` writes for its changes, copying the stored JSON of
//! values and vectors rather than decoding and encoding them again.

use rusqlite::{params, Connection, Row};

use super::rows::{row_to_record, vv_from_column, RECORD_COLUMNS};
use super::schema::{head_of, NOT_SUPERSEDED};
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::model::NodeId;
use crate::store::{ChangeFilter, PageInfo, PageWriter};

/// Size of the pieces a JSON page is built in.
const CHUNK: usize = 64 * 1024;

/// Writes the page of changes after `since` (at most `limit` rows of the log, those `filter`
/// admits) to `out` as a JSON array.
pub(super) fn write_page(
    tx: &Connection,
    since: Hlc,
    limit: usize,
    filter: &ChangeFilter,
    mut out: PageWriter,
) -> Result<(PageWriter, PageInfo)> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM records WHERE cursor > ?1 AND {NOT_SUPERSEDED}
                 ORDER BY cursor LIMIT ?2"
    ))?;
    let mut rows = stmt.query(params![since.as_i64(), (limit + 1) as i64])?;
    // Changes are written into a small buffer that goes to `out` (and its compressor)
    // whenever it fills, so a page is never held uncompressed as a whole.
    let mut buf = Vec::with_capacity(CHUNK + 8 * 1024);
    buf.push(b'[');
    let (mut read, mut count, mut last) = (0usize, 0usize, None);
    let mut has_more = false;
    while let Some(row) = rows.next()? {
        if read == limit {
            has_more = true;
            break;
        }
        read += 1;
        last = Some(Hlc::from_i64(row.get(8)?));
        let mark = buf.len();
        if count > 0 {
            buf.push(b',');
        }
        if write_change_json(row, filter, &mut buf)? {
            count += 1;
            if buf.len() >= CHUNK {
                out.write(&buf)?;
                buf.clear();
            }
        } else {
            buf.truncate(mark);
        }
    }
    buf.push(b']');
    out.write(&buf)?;
    let watermark = match last {
        Some(c) => c,
        None => head_of(tx)?,
    };
    Ok((
        out,
        PageInfo {
            count,
            watermark,
            has_more,
        },
    ))
}

/// Appends the change for a `records` row (in [`RECORD_COLUMNS`] order) to `out` as JSON, the
/// same bytes `serde_json` writes for
/// [`Record::to_change`](crate::model::Record::to_change), if `filter` admits it. The stored
/// value and vector are JSON already: they are copied, not decoded and re-encoded. A row
/// whose value is not in the layout this store writes goes through the generic path.
fn write_change_json(row: &Row, filter: &ChangeFilter, out: &mut Vec<u8>) -> Result<bool> {
    use rusqlite::types::ValueRef;
    let text = |i: usize| -> Result<Option<&str>> {
        match row.get_ref(i)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(Some)
                .map_err(|e| Error::Storage(format!("stored text is not UTF-8: {e}"))),
            other => Err(Error::Storage(format!(
                "unexpected stored type {:?} in column {i}",
                other.data_type()
            ))),
        }
    };
    let collection = text(0)?.unwrap_or_default();
    let kind = text(1)?.unwrap_or_default();
    let id = text(2)?.unwrap_or_default();
    let hlc = Hlc::from_i64(row.get(3)?);
    let node = NodeId(row.get::<_, i64>(4)? as u16);
    let vv = text(5)?.unwrap_or_default();
    let value = text(6)?;
    let conflicts = text(7)?;
    let cursor = Hlc::from_i64(row.get(8)?);
    let existed: bool = row.get(9)?;

    if !filter.collections.is_empty() && !filter.collections.iter().any(|c| c == collection) {
        return Ok(false);
    }
    if filter.exclude_collections.iter().any(|c| c == collection) {
        return Ok(false);
    }
    if let Some(origin) = filter.exclude_origin {
        if node == origin && conflicts.is_none() {
            let vv = vv_from_column(vv, hlc, node)?;
            if vv.0.keys().all(|n| *n == origin) {
                return Ok(false);
            }
        }
    }

    const DOC: &str = "{\"kind\":\"document\",";
    const COLL: &str = "{\"kind\":\"collection\",";
    let (op, body) = match (kind, value) {
        ("d", Some(v)) if v.starts_with(DOC) && v.ends_with('}') => (
            if existed {
                "DocumentUpdate"
            } else {
                "DocumentInsert"
            },
            Some(&v[DOC.len()..v.len() - 1]),
        ),
        ("c", Some(v)) if v.starts_with(COLL) && v.ends_with('}') => {
            ("CollectionCreate", Some(&v[COLL.len()..v.len() - 1]))
        }
        ("d", None) => ("DocumentDelete", None),
        ("c", None) => ("CollectionDelete", None),
        _ => {
            let record = row_to_record(row)??;
            if filter.admits(&record.to_change()) {
                serde_json::to_writer(&mut *out, &record.to_change())
                    .map_err(|e| Error::Internal(format!("encode change: {e}")))?;
                return Ok(true);
            }
            return Ok(false);
        }
    };
    let str_json = |out: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(&mut *out, s).map_err(|e| Error::Internal(e.to_string()))
    };
    out.extend_from_slice(b"{\"cursor\":\"");
    out.extend_from_slice(cursor.to_hex().as_bytes());
    out.extend_from_slice(b"\",\"version\":{\"hlc\":\"");
    out.extend_from_slice(hlc.to_hex().as_bytes());
    out.extend_from_slice(b"\",\"node\":\"");
    out.extend_from_slice(node.to_hex().as_bytes());
    out.extend_from_slice(b"\",\"vv\":");
    write_vv_json(out, vv, hlc, node);
    out.extend_from_slice(b"},\"op\":\"");
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(b"\",\"collection\":");
    str_json(out, collection)?;
    match body {
        Some(fields) => {
            out.push(b',');
            out.extend_from_slice(fields.as_bytes());
        }
        None if kind == "d" => {
            out.extend_from_slice(b",\"id\":");
            str_json(out, id)?;
        }
        None => {}
    }
    if let Some(c) = conflicts {
        out.extend_from_slice(b",\"conflicts\":");
        out.extend_from_slice(c.as_bytes());
    }
    out.push(b'}');
    Ok(true)
}

/// Writes a `vv` column's version vector as JSON.
fn write_vv_json(out: &mut Vec<u8>, text: &str, hlc: Hlc, node: NodeId) {
    if text.is_empty() {
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(node.to_hex().as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(hlc.to_hex().as_bytes());
        out.extend_from_slice(b"\"}");
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConflictStrategy;
    use crate::model::{Change, CollectionSettings, EmbeddingSettings};
    use crate::store::sqlite::testing::{clock, doc, rt};
    use crate::store::{ApplyMode, SqliteStore, Store};

    /// The copied-through JSON page is byte for byte what serde writes for the decoded page,
    /// for every kind of record and every filter.
    #[test]
    fn json_pages_equal_the_decoded_pages() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let a = SqliteStore::open(dir.path().join("a.db"), Some(1), clock(1_000_000)).unwrap();
            let b = SqliteStore::open(dir.path().join("b.db"), Some(2), clock(1_000_000)).unwrap();
            for s in [&a, &b] {
                s.put_collection("c", CollectionSettings::default())
                    .await
                    .unwrap();
            }
            let mut settings = CollectionSettings::default();
            settings.search.top_k = 9;
            settings.embedding = EmbeddingSettings {
                model: Some("m\u{e9}".into()),
                dimensions: Some(2),
            };
            a.put_collection("c", settings.clone()).await.unwrap();
            a.put_collection("gone", CollectionSettings::default())
                .await
                .unwrap();
            a.delete_collection("gone").await.unwrap();
            a.put_document("c", doc("d1", "one")).await.unwrap();
            a.put_document("c", doc("d1", "one again")).await.unwrap();
            let mut e = doc("d/2", "tab\there \u{1f600}");
            e.id = "d\"2".into();
            e.embedding = Some(vec![0.5, -1.25]);
            a.put_document("c", e).await.unwrap();
            a.put_document("c", doc("d3", "three")).await.unwrap();
            a.delete_document("c", "d3").await.unwrap();
            // Concurrent writes on b: a conflict record (conflicts column) and b-only history.
            b.put_document("c", doc("d1", "b's version")).await.unwrap();
            b.put_document("c", doc("only-b", "b")).await.unwrap();
            let from_b = b
                .changes_since(Hlc::ZERO, 100, &ChangeFilter::default())
                .await
                .unwrap()
                .changes;
            a.apply_changes(
                from_b,
                ConflictStrategy::LastWriterWins,
                ApplyMode::AllOrNothing,
                None,
            )
            .await
            .unwrap();
            let filters = [
                ChangeFilter::default(),
                ChangeFilter {
                    collections: vec!["gone".into()],
                    ..Default::default()
                },
                ChangeFilter {
                    exclude_collections: vec!["gone".into()],
                    ..Default::default()
                },
                ChangeFilter {
                    exclude_origin: Some(NodeId(2)),
                    ..Default::default()
                },
                ChangeFilter {
                    exclude_origin: Some(NodeId(1)),
                    ..Default::default()
                },
            ];
            let mut ops = std::collections::BTreeSet::new();
            for filter in &filters {
                for limit in [1, 2, 3, 100] {
                    let mut since = Hlc::ZERO;
                    loop {
                        let page = a.changes_since(since, limit, filter).await.unwrap();
                        let (out, info) = a
                            .write_changes(since, limit, filter, PageWriter::plain())
                            .await
                            .unwrap();
                        for c in &page.changes {
                            ops.insert(serde_json::to_value(c).unwrap()["op"].to_string());
                        }
                        assert_eq!(info.count, page.changes.len());
                        assert_eq!(info.watermark, page.watermark);
                        assert_eq!(info.has_more, page.has_more);
                        assert_eq!(
                            String::from_utf8(out.finish().unwrap()).unwrap(),
                            serde_json::to_string(&page.changes).unwrap()
                        );
                        let (out, _) = a
                            .write_changes(since, limit, filter, PageWriter::zstd(1).unwrap())
                            .await
                            .unwrap();
                        let json = zstd::decode_all(&out.finish().unwrap()[..]).unwrap();
                        let decoded: Vec<Change> = serde_json::from_slice(&json).unwrap();
                        assert_eq!(decoded, page.changes);
                        since = page.watermark;
                        if !page.has_more {
                            break;
                        }
                    }
                }
            }
            assert_eq!(ops.len(), 5, "every op was covered: {ops:?}");
            let conflicted = a
                .changes_since(Hlc::ZERO, 100, &ChangeFilter::default())
                .await
                .unwrap()
                .changes
                .into_iter()
                .filter(|c| !c.conflicts.is_empty())
                .count();
            assert!(conflicted > 0, "a record with conflicts was covered");
        });
    }
}
