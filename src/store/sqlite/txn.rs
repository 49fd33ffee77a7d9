//! The engine's view of a SQLite write transaction ([`SqlTxn`]): the key lookups and row
//! writes the write rules run, with the statements they run per record held for the write.

use rusqlite::{params, CachedStatement, Connection, OptionalExtension};

use super::rows::{record_columns, row_to_record, vv_column, vv_from_column, R_COLUMNS};
use super::schema::CURRENT;
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::model::{Kind, NodeId, Record, RecordKey, Value, Version, VersionVector};
use crate::store::engine::{RecordHead, Txn};
use crate::store::Checkpoint;

/// A record kind as an SQL literal. Lookups by key name the kind in their text rather than
/// binding it: `heads` has a partial index on `kind = 'c'`, and when the planner weighs it
/// for a join on a bound kind, SQLite prepares the statement again on every execution (each
/// local write and conflict planned its lookup anew: about half the writer's time in the
/// 5-node mesh). Single-table lookups by the whole key skip that planning, but are written
/// the same way.
fn kind_literal(kind: Kind) -> &'static str {
    match kind {
        Kind::Collection => "'c'",
        Kind::Document => "'d'",
    }
}

/// A record's current row by key (?1 collection, ?2 id).
pub(super) fn current_by_key_sql(kind: Kind) -> String {
    format!(
        "SELECT {R_COLUMNS} FROM {CURRENT}
         WHERE h.collection = ?1 AND h.kind = {} AND h.id = ?2",
        kind_literal(kind)
    )
}

/// A record's head by key (?1 collection, ?2 id).
fn head_by_key_sql(kind: Kind) -> String {
    format!(
        "SELECT hlc, node, vv, live, conflicted, cursor
         FROM heads WHERE collection = ?1 AND kind = {} AND id = ?2",
        kind_literal(kind)
    )
}

/// Moves a head to its record's new row: ?1..?9 are the head's columns in `heads` order
/// (?2, the kind, is in the text instead), ?10 the cursor it must be at now.
fn head_update_sql(kind: Kind) -> String {
    format!(
        "UPDATE heads SET cursor = ?4, hlc = ?5, node = ?6, vv = ?7, live = ?8, conflicted = ?9
         WHERE collection = ?1 AND kind = {} AND id = ?3 AND cursor = ?10",
        kind_literal(kind)
    )
}

/// Appends a record's row to the log (its cursor is new, so it never replaces a row).
const APPEND_RECORD: &str = concat!(
    "INSERT INTO records (",
    record_columns!(""),
    ")
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
);

/// Index of a kind in per-kind arrays.
fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Collection => 0,
        Kind::Document => 1,
    }
}

/// The statements a write runs for every record it stores, each taken from the statement
/// cache once per write rather than looked up by its text (hashed and compared) per record.
#[derive(Default)]
struct KeyStatements<'c> {
    append: Option<CachedStatement<'c>>,
    insert_head: Option<CachedStatement<'c>>,
    supersede: Option<CachedStatement<'c>>,
    /// By [`kind_index`].
    head: [Option<CachedStatement<'c>>; 2],
    update_head: [Option<CachedStatement<'c>>; 2],
}

/// The statement in `slot`, taken from `tx`'s cache the first time.
fn held<'s, 'c>(
    slot: &'s mut Option<CachedStatement<'c>>,
    tx: &'c Connection,
    sql: impl FnOnce() -> String,
) -> Result<&'s mut CachedStatement<'c>> {
    let stmt = match slot.take() {
        Some(stmt) => stmt,
        None => tx.prepare_cached(&sql())?,
    };
    Ok(slot.insert(stmt))
}

/// The engine's view of a SQLite write transaction.
pub(super) struct SqlTxn<'c> {
    /// The connection, inside the write transaction (and the job's savepoint).
    pub(super) tx: &'c Connection,
    stmts: KeyStatements<'c>,
    /// Stored JSON of the values of the batch being applied, by change index, encoded
    /// before the batch reached the writer thread (documents only).
    pub(super) encoded_values: Vec<Option<String>>,
    /// Records stored from a batch, handed back with its outcome to be freed off the writer
    /// thread (freeing a page of documents is a few percent of the writer's time).
    pub(super) retired: Vec<Record>,
    /// Rows this write added to `superseded` (less those it deleted).
    pub(super) superseded_delta: i64,
}

impl<'c> SqlTxn<'c> {
    pub(super) fn new(tx: &'c Connection) -> Self {
        SqlTxn {
            tx,
            stmts: KeyStatements::default(),
            encoded_values: Vec::new(),
            retired: Vec::new(),
            superseded_delta: 0,
        }
    }

    /// Appends `r`'s row with its value encoded as `value` (None for a tombstone) and moves
    /// its head there.
    fn put_row(&mut self, r: &Record, value: Option<String>, previous: Option<Hlc>) -> Result<()> {
        let enc = |e: serde_json::Error| Error::Internal(e.to_string());
        let conflicts = if r.conflicts.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&r.conflicts).map_err(enc)?)
        };
        let vv = vv_column(&r.version)?;
        let live = value.is_some();
        let conflicted = conflicts.is_some();
        held(&mut self.stmts.append, self.tx, || APPEND_RECORD.into())?.execute(params![
            r.key.collection,
            r.key.kind.as_str(),
            r.key.id,
            r.version.hlc.as_i64(),
            i64::from(r.version.node.0),
            vv,
            value,
            conflicts,
            r.cursor.as_i64(),
            r.existed,
        ])?;
        // The head's columns, bound by number in both statements below (the update names
        // the kind as a literal, see `kind_literal`, and leaves ?2 unused).
        let head = params![
            r.key.collection,
            r.key.kind.as_str(),
            r.key.id,
            r.cursor.as_i64(),
            r.version.hlc.as_i64(),
            i64::from(r.version.node.0),
            vv,
            live,
            conflicted,
        ];
        let Some(previous) = previous else {
            // Known to be absent: a plain insert (a duplicate key fails, never overwrites).
            held(&mut self.stmts.insert_head, self.tx, || {
                "INSERT INTO heads (collection, kind, id, cursor, hlc, node, vv, live, conflicted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                    .into()
            })?
            .execute(head)?;
            return Ok(());
        };
        // Known to be current at `previous`: the head moves to the new row, and the old row
        // is superseded (skipped by readers from now on, deleted later).
        let mut update = head.to_vec();
        let previous_cursor = previous.as_i64();
        update.push(&previous_cursor);
        let kind = r.key.kind;
        let n = held(
            &mut self.stmts.update_head[kind_index(kind)],
            self.tx,
            || head_update_sql(kind),
        )?
        .execute(update.as_slice())?;
        if n != 1 {
            return Err(Error::Storage(format!(
                "record {:?} is no longer at cursor {previous}",
                r.key
            )));
        }
        held(&mut self.stmts.supersede, self.tx, || {
            "INSERT INTO superseded (cursor) VALUES (?1)".into()
        })?
        .execute([previous.as_i64()])?;
        self.superseded_delta += 1;
        Ok(())
    }
}

impl Txn for SqlTxn<'_> {
    fn get(&mut self, key: &RecordKey) -> Result<Option<Record>> {
        let mut stmt = self.tx.prepare_cached(&current_by_key_sql(key.kind))?;
        let r = stmt
            .query_row(params![key.collection, key.id], row_to_record)
            .optional()?;
        r.transpose()
    }

    fn get_head(&mut self, key: &RecordKey) -> Result<Option<RecordHead>> {
        let kind = key.kind;
        let stmt = held(&mut self.stmts.head[kind_index(kind)], self.tx, || {
            head_by_key_sql(kind)
        })?;
        let row = stmt
            .query_row(params![key.collection, key.id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()?;
        row.map(|(hlc, node, vv, live, has_conflicts, cursor)| {
            let (hlc, node) = (Hlc::from_i64(hlc), NodeId(node as u16));
            Ok(RecordHead {
                version: Version {
                    hlc,
                    node,
                    vv: vv_from_column(&vv, hlc, node)?,
                },
                live,
                has_conflicts,
                cursor: Hlc::from_i64(cursor),
            })
        })
        .transpose()
    }

    fn put_after(&mut self, r: &Record, previous: Option<Hlc>) -> Result<()> {
        let value = match &r.value {
            Value::Deleted => None,
            v => Some(serde_json::to_string(v).map_err(|e| Error::Internal(e.to_string()))?),
        };
        self.put_row(r, value, previous)
    }

    fn put_incoming(&mut self, r: Record, previous: Option<Hlc>, index: usize) -> Result<()> {
        match self.encoded_values.get_mut(index).and_then(Option::take) {
            Some(value) => self.put_row(&r, Some(value), previous)?,
            None => self.put_after(&r, previous)?,
        }
        self.retired.push(r);
        Ok(())
    }

    fn bump_origins(&mut self, vv: &VersionVector) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO origins (node, hlc) VALUES (?1, ?2)
             ON CONFLICT(node) DO UPDATE SET hlc = MAX(hlc, excluded.hlc)",
        )?;
        for (node, hlc) in &vv.0 {
            stmt.execute(params![i64::from(node.0), hlc.as_i64()])?;
        }
        Ok(())
    }

    fn save_checkpoint(&mut self, cp: &Checkpoint) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO checkpoints (peer, direction, scope, incarnation, cursor, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(peer, direction, scope) DO UPDATE SET incarnation = excluded.incarnation,
               cursor = excluded.cursor, updated_ms = excluded.updated_ms",
        )?;
        stmt.execute(params![
            i64::from(cp.key.peer.0),
            cp.key.direction.as_str(),
            cp.key.scope,
            cp.incarnation,
            cp.cursor.as_i64(),
            cp.updated_ms as i64,
        ])?;
        Ok(())
    }

    fn live_document_keys(&mut self, collection: &str) -> Result<Vec<RecordKey>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id FROM heads WHERE collection = ?1 AND kind = 'd' AND live = 1",
        )?;
        let ids = stmt
            .query_map([collection], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids
            .into_iter()
            .map(|id| RecordKey::document(collection, &id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CollectionSettings;
    use crate::store::engine::{self, Ctx};
    use crate::store::sqlite::open_connection;
    use crate::store::sqlite::testing::{clock, doc, rt};
    use crate::store::{SqliteStore, Store};

    /// The writer's key lookups and head updates are planned once: a bound value that can
    /// decide whether a partial index applies makes SQLite prepare a join again on every
    /// execution (as the bound kind did in `current_by_key_sql`: 5 lookups, 5 re-prepares).
    #[test]
    fn key_statements_are_not_prepared_again() {
        use rusqlite::StatementStatus::RePrepare;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        rt().block_on(async {
            let store = SqliteStore::open(&path, Some(1), clock(2_000_000)).unwrap();
            store
                .put_collection("c", CollectionSettings::default())
                .await
                .unwrap();
        });
        let conn = open_connection(&path, false).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        let ctx_clock = clock(3_000_000);
        let ctx = Ctx {
            node: NodeId(1),
            clock: &ctx_clock,
        };
        let mut t = SqlTxn::new(&tx);
        for round in 0..3 {
            for i in 0..5 {
                engine::put_document(
                    &mut t,
                    &ctx,
                    "c",
                    doc(&format!("d{i}"), &format!("v{round}")),
                )
                .unwrap();
                t.get_head(&RecordKey::collection("c")).unwrap();
            }
        }
        // Hands the statements it held back to the connection's cache.
        drop(t);
        for kind in [Kind::Document, Kind::Collection] {
            for sql in [
                current_by_key_sql(kind),
                head_by_key_sql(kind),
                head_update_sql(kind),
            ] {
                let stmt = tx.prepare_cached(&sql).unwrap();
                assert_eq!(stmt.get_status(RePrepare), 0, "prepared again: {sql}");
            }
        }
        // The statements were used (and so would have been prepared again, if at all).
        assert_eq!(
            tx.prepare_cached(&head_update_sql(Kind::Document))
                .unwrap()
                .get_status(rusqlite::StatementStatus::Run),
            10
        );
    }
}
