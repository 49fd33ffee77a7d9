//! A `records` row as a [`Record`], and the compact `vv` column both tables store.

use rusqlite::{Connection, Row};

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::model::{Kind, NodeId, Record, RecordKey, Value, Version, VersionVector};

/// The `records` columns, each prefixed with `$p` (`""`, or `"r."` in joins), in the order
/// rows are read by position ([`row_to_record`], the page encoder): the one place they are
/// listed.
macro_rules! record_columns {
    ($p:literal) => {
        record_columns!(@ $p; collection, kind, id, hlc, node, vv, value, conflicts, cursor, existed)
    };
    (@ $p:literal; $first:ident $(, $rest:ident)*) => {
        concat!($p, stringify!($first) $(, ", ", $p, stringify!($rest))*)
    };
}
pub(super) use record_columns;

pub(super) const RECORD_COLUMNS: &str = record_columns!("");

/// [`RECORD_COLUMNS`] of `records r`, for queries that join `heads h`.
pub(super) const R_COLUMNS: &str = record_columns!("r.");

/// A version vector as stored in the `vv` columns: empty when it holds nothing but the
/// version's own write (`{node: hlc}`, a record last written by a node that had seen no other
/// node's write of it, the usual case), which keeps a `heads` row about a third smaller (and
/// the pages an update touches fewer); its JSON otherwise.
pub(super) fn vv_column(version: &Version) -> Result<String> {
    let vv = &version.vv.0;
    if vv.len() == 1 && vv.get(&version.node) == Some(&version.hlc) {
        return Ok(String::new());
    }
    serde_json::to_string(&version.vv).map_err(|e| Error::Internal(e.to_string()))
}

/// The version vector a `vv` column holds for a version written by `node` at `hlc`.
pub(super) fn vv_from_column(text: &str, hlc: Hlc, node: NodeId) -> Result<VersionVector> {
    if text.is_empty() {
        return Ok(VersionVector([(node, hlc)].into_iter().collect()));
    }
    Ok(serde_json::from_str(text)?)
}

/// A row of [`RECORD_COLUMNS`] as a record: SQLite's error outside, the decoding's inside.
pub(super) fn row_to_record(row: &Row) -> rusqlite::Result<Result<Record>> {
    let collection: String = row.get(0)?;
    let kind: String = row.get(1)?;
    let id: String = row.get(2)?;
    let hlc: i64 = row.get(3)?;
    let node: i64 = row.get(4)?;
    let vv: String = row.get(5)?;
    let value: Option<String> = row.get(6)?;
    let conflicts: Option<String> = row.get(7)?;
    let cursor: i64 = row.get(8)?;
    let existed: bool = row.get(9)?;
    Ok((|| {
        let kind = Kind::parse(&kind)
            .ok_or_else(|| Error::Storage(format!("unknown record kind '{kind}'")))?;
        Ok(Record {
            key: RecordKey {
                collection,
                kind,
                id,
            },
            version: Version {
                hlc: Hlc::from_i64(hlc),
                node: NodeId(node as u16),
                vv: vv_from_column(&vv, Hlc::from_i64(hlc), NodeId(node as u16))?,
            },
            value: match value {
                Some(v) => serde_json::from_str(&v)?,
                None => Value::Deleted,
            },
            conflicts: match conflicts {
                Some(c) => serde_json::from_str(&c)?,
                None => Vec::new(),
            },
            cursor: Hlc::from_i64(cursor),
            existed,
        })
    })())
}

fn collect_records(
    rows: rusqlite::MappedRows<'_, impl FnMut(&Row) -> rusqlite::Result<Result<Record>>>,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

/// The records `sql` selects (as [`RECORD_COLUMNS`]).
pub(super) fn query_records(
    tx: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<Record>> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt.query_map(p, row_to_record)?;
    collect_records(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConflictStrategy;
    use crate::model::{Change, ChangeBody, CollectionSettings};
    use crate::store::engine::Txn;
    use crate::store::sqlite::open_connection;
    use crate::store::sqlite::testing::{clock, doc, rt};
    use crate::store::sqlite::txn::SqlTxn;
    use crate::store::{ApplyMode, ChangeFilter, PageWriter, SqliteStore, Store};

    /// A version vector that is just the version's own write is stored as an empty column;
    /// any other (several nodes, or a later entry for the writer) as JSON. Either way every
    /// reader (records, heads, the JSON page) gives back exactly the vector that was written.
    #[test]
    fn version_vectors_are_stored_compactly_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (n1, n2) = (NodeId(1), NodeId(2));
        let (h1, h2, h3) = (
            Hlc::new(1_000_000, 0),
            Hlc::new(1_000_100, 0),
            Hlc::new(1_000_200, 3),
        );
        let vv = |entries: &[(NodeId, Hlc)]| VersionVector(entries.iter().copied().collect());
        let cases = [
            ("own", h1, n1, vv(&[(n1, h1)]), true),
            ("merged", h2, n2, vv(&[(n1, h1), (n2, h2)]), false),
            ("ahead", h1, n1, vv(&[(n1, h3)]), false),
        ];
        let changes: Vec<Change> = cases
            .iter()
            .map(|(id, hlc, node, vv, _)| Change {
                cursor: *hlc,
                version: Version {
                    hlc: *hlc,
                    node: *node,
                    vv: vv.clone(),
                },
                body: ChangeBody::DocumentInsert {
                    collection: "c".into(),
                    document: doc(id, id),
                },
                conflicts: Vec::new(),
            })
            .collect();
        rt().block_on(async {
            let store = SqliteStore::open(&path, Some(9), clock(1_000_300)).unwrap();
            store
                .put_collection("c", CollectionSettings::default())
                .await
                .unwrap();
            store
                .apply_changes(
                    changes,
                    ConflictStrategy::LastWriterWins,
                    ApplyMode::AllOrNothing,
                    None,
                )
                .await
                .unwrap();
            let (out, _) = store
                .write_changes(
                    Hlc::ZERO,
                    100,
                    &ChangeFilter::default(),
                    PageWriter::plain(),
                )
                .await
                .unwrap();
            let page: Vec<Change> = serde_json::from_slice(&out.finish().unwrap()).unwrap();
            for (id, _, _, vv, _) in &cases {
                let key = RecordKey::document("c", id);
                let record = store.get_record(&key).await.unwrap().unwrap();
                assert_eq!(&record.version.vv, vv, "{id}");
                let change = page.iter().find(|c| c.body.key() == key).unwrap();
                assert_eq!(&change.version.vv, vv, "{id} in a page");
            }
        });
        let conn = open_connection(&path, false).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for (id, _, _, vv, compact) in &cases {
            for table in ["records", "heads"] {
                let stored: String = tx
                    .query_row(
                        &format!("SELECT vv FROM {table} WHERE kind = 'd' AND id = ?1"),
                        [id],
                        |r| r.get(0),
                    )
                    .unwrap();
                let expected = if *compact {
                    String::new()
                } else {
                    serde_json::to_string(vv).unwrap()
                };
                assert_eq!(stored, expected, "{id} in {table}");
            }
        }
        let mut t = SqlTxn::new(&tx);
        for (id, _, _, vv, _) in &cases {
            let head = t.get_head(&RecordKey::document("c", id)).unwrap().unwrap();
            assert_eq!(&head.version.vv, vv, "{id}'s head");
        }
    }
}
