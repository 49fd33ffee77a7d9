//! The store's tables, the upgrades of layouts older stores were written in, and the few
//! reads every part of the store shares (the `meta` table, the log's head, current rows).

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::record_columns;
use crate::error::Result;
use crate::hlc::Hlc;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    cursor INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    node INTEGER NOT NULL,
    vv TEXT NOT NULL,
    value TEXT,
    conflicts TEXT,
    existed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS heads (
    collection TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    hlc INTEGER NOT NULL,
    node INTEGER NOT NULL,
    vv TEXT NOT NULL,
    live INTEGER NOT NULL,
    conflicted INTEGER NOT NULL,
    PRIMARY KEY (collection, kind, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS heads_collections ON heads (collection) WHERE kind = 'c';
CREATE INDEX IF NOT EXISTS heads_tombstones ON heads (hlc) WHERE live = 0;
CREATE INDEX IF NOT EXISTS heads_conflicts ON heads (collection, kind, id) WHERE conflicted = 1;
CREATE TABLE IF NOT EXISTS superseded (cursor INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS checkpoints (
    peer INTEGER NOT NULL,
    direction TEXT NOT NULL,
    scope TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (peer, direction, scope)
);
CREATE TABLE IF NOT EXISTS origins (node INTEGER PRIMARY KEY, hlc INTEGER NOT NULL);
";

/// Stores created before `heads` existed held one row per record in `records`, with a unique
/// index on the key; every row is current, so `heads` is built from them as they are.
const MIGRATE_TO_HEADS: &str = "
INSERT INTO heads (collection, kind, id, cursor, hlc, node, vv, live, conflicted)
    SELECT collection, kind, id, cursor, hlc, node, vv, value IS NOT NULL, conflicts IS NOT NULL
    FROM records;
DROP INDEX IF EXISTS records_key;
DROP INDEX IF EXISTS records_collections;
DROP INDEX IF EXISTS records_tombstones;
DROP INDEX IF EXISTS records_conflicts;
";

/// Stores created before the log was keyed by its cursor kept records in a `WITHOUT ROWID`
/// table keyed by (collection, kind, id). Rows of a kilobyte or more overflow such a
/// table's pages (about 4 KiB of disk and WAL per document) and a log read hops through a
/// secondary index; this moves them, in one transaction, into the current layout.
const MIGRATE_WITHOUT_ROWID: &str = concat!(
    "
CREATE TABLE records_v2 (
    cursor INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    node INTEGER NOT NULL,
    vv TEXT NOT NULL,
    value TEXT,
    conflicts TEXT,
    existed INTEGER NOT NULL
);
INSERT INTO records_v2 (",
    record_columns!(""),
    ")
    SELECT ",
    record_columns!(""),
    "
    FROM records ORDER BY cursor;
DROP TABLE records;
ALTER TABLE records_v2 RENAME TO records;
"
);

/// Current records: `heads h` joined to their rows `records r`.
pub(super) const CURRENT: &str = "heads h JOIN records r ON r.cursor = h.cursor";

/// Log rows that no newer row of the same record has replaced.
pub(super) const NOT_SUPERSEDED: &str =
    "NOT EXISTS (SELECT 1 FROM superseded s WHERE s.cursor = records.cursor)";

/// Creates the tables of a new store, or brings an older store's to the current layout.
pub(super) fn create_or_upgrade(conn: &Connection) -> Result<()> {
    let old_layout: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let has_heads = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'heads'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    // Layout upgrades and the schema in one transaction: a store is upgraded whole or
    // not at all.
    let mut setup = String::from("BEGIN IMMEDIATE;");
    if old_layout
        .as_ref()
        .is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID"))
    {
        setup.push_str(MIGRATE_WITHOUT_ROWID);
    }
    setup.push_str(SCHEMA);
    if old_layout.is_some() && !has_heads {
        setup.push_str(MIGRATE_TO_HEADS);
    }
    setup.push_str("COMMIT;");
    conn.execute_batch(&setup)?;
    Ok(())
}

pub(super) fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub(super) fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Head of the change log: its latest cursor, or the latest one purged if that is later.
pub(super) fn head_of(conn: &Connection) -> Result<Hlc> {
    let max: Option<i64> = conn.query_row("SELECT MAX(cursor) FROM records", [], |r| r.get(0))?;
    let purged = meta_get(conn, "purged_head")?
        .and_then(|s| Hlc::from_hex(&s).ok())
        .unwrap_or(Hlc::ZERO);
    Ok(max.map(Hlc::from_i64).unwrap_or(Hlc::ZERO).max(purged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CollectionSettings, NodeId, RecordKey, Value};
    use crate::store::sqlite::rows::RECORD_COLUMNS;
    use crate::store::sqlite::testing::{clock, doc, rt};
    use crate::store::{ChangeFilter, SqliteStore, Store};

    /// A store written before `heads` existed (one row per record in `records`, with a
    /// unique key index) opens with its records intact, and takes updates.
    #[test]
    fn layout_without_heads_is_migrated() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let src = SqliteStore::open(dir.path().join("src.db"), Some(5), clock(2_000_000))
                .unwrap();
            src.put_collection("c", CollectionSettings::default())
                .await
                .unwrap();
            src.put_document("c", doc("x", "kept")).await.unwrap();
            src.put_document("c", doc("y", "gone")).await.unwrap();
            src.delete_document("c", "y").await.unwrap();
            src.compact().await.unwrap();
            let expected = src
                .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
                .await
                .unwrap();
            assert_eq!(expected.changes.len(), 3);
            let path = dir.path().join("old.db");
            {
                let conn = Connection::open(&path).unwrap();
                conn.execute_batch(&format!(
                    "PRAGMA journal_mode=WAL;
                     CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                     CREATE TABLE records (
                        cursor INTEGER PRIMARY KEY, collection TEXT NOT NULL,
                        kind TEXT NOT NULL, id TEXT NOT NULL, hlc INTEGER NOT NULL,
                        node INTEGER NOT NULL, vv TEXT NOT NULL, value TEXT, conflicts TEXT,
                        existed INTEGER NOT NULL);
                     CREATE UNIQUE INDEX records_key ON records (collection, kind, id);
                     CREATE INDEX records_tombstones ON records (hlc) WHERE value IS NULL;
                     INSERT INTO meta VALUES ('node_id', '0005'), ('incarnation', 'abcd');
                     ATTACH DATABASE '{}' AS src;
                     INSERT INTO records ({RECORD_COLUMNS}) SELECT {RECORD_COLUMNS} FROM src.records;",
                    dir.path().join("src.db").display()
                ))
                .unwrap();
            }
            let store = SqliteStore::open(&path, None, clock(2_000_000)).unwrap();
            let page = store
                .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
                .await
                .unwrap();
            assert_eq!(page, expected);
            let stats = store.stats().await.unwrap();
            assert_eq!((stats.documents, stats.tombstones), (1, 1));
            let x = store
                .get_record(&RecordKey::document("c", "x"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(x.value, Value::Document { document: doc("x", "kept") });
            store.put_document("c", doc("x", "changed")).await.unwrap();
            store.put_document("c", doc("y", "back")).await.unwrap();
            let listed = store.list_documents("c", None, 10).await.unwrap();
            let contents: Vec<_> = listed
                .documents
                .iter()
                .map(|r| match &r.value {
                    Value::Document { document } => document.content.clone(),
                    other => panic!("not a document: {other:?}"),
                })
                .collect();
            assert_eq!(contents, ["changed", "back"]);
            assert_eq!(store.stats().await.unwrap().superseded, 2);
            let old_index: Option<String> = Connection::open(&path)
                .unwrap()
                .query_row(
                    "SELECT name FROM sqlite_master WHERE name = 'records_key'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .unwrap();
            assert_eq!(old_index, None, "the old unique key index is dropped");
        });
    }

    /// A store written with the old `WITHOUT ROWID` layout opens with its records intact.
    #[test]
    fn old_layout_is_migrated() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            {
                let conn = Connection::open(&path).unwrap();
                conn.execute_batch(
                    "PRAGMA journal_mode=WAL;
                     CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                     CREATE TABLE records (
                        collection TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
                        hlc INTEGER NOT NULL, node INTEGER NOT NULL, vv TEXT NOT NULL,
                        value TEXT, conflicts TEXT, cursor INTEGER NOT NULL UNIQUE,
                        existed INTEGER NOT NULL, PRIMARY KEY (collection, kind, id)
                     ) WITHOUT ROWID;
                     INSERT INTO meta VALUES ('node_id', '0005'), ('incarnation', 'abcd');",
                )
                .unwrap();
            }
            // Records written by the current code, copied into the old table.
            let src = SqliteStore::open(dir.path().join("src.db"), Some(5), clock(2_000_000))
                .unwrap();
            src.put_collection("c", CollectionSettings::default())
                .await
                .unwrap();
            src.put_document("c", doc("x", "kept")).await.unwrap();
            let expected = src
                .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
                .await
                .unwrap();
            {
                let conn = Connection::open(&path).unwrap();
                conn.execute(
                    "ATTACH DATABASE ?1 AS src",
                    [dir.path().join("src.db").to_str().unwrap()],
                )
                .unwrap();
                conn.execute_batch(&format!(
                    "INSERT INTO records ({RECORD_COLUMNS}) SELECT {RECORD_COLUMNS} FROM src.records"
                ))
                .unwrap();
            }
            let store = SqliteStore::open(&path, None, clock(2_000_000)).unwrap();
            assert_eq!(store.node_id(), NodeId(5));
            assert_eq!(store.incarnation(), "abcd");
            let page = store
                .changes_since(Hlc::ZERO, 10, &ChangeFilter::default())
                .await
                .unwrap();
            assert_eq!(page, expected);
            let layout: String = Connection::open(&path)
                .unwrap()
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE name = 'records'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(!layout.to_ascii_uppercase().contains("WITHOUT ROWID"));
            store.put_document("c", doc("y", "new")).await.unwrap();
            assert_eq!(store.stats().await.unwrap().documents, 2);
        });
    }
}
