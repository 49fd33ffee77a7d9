//! The write rules every store shares, run inside the store's own write transaction through
//! the small [`Txn`] interface. Commit cursors come from the node's HLC while the writer is
//! held, so cursor order is commit order and a reader never sees a later cursor commit before
//! an earlier one.

use crate::config::ConflictStrategy;
use crate::error::{Error, Result};
use crate::hlc::{Hlc, HlcClock};
use crate::model::{
    validate_doc_id, validate_name, Change, ChangeBody, CollectionSettings, Document, Kind, NodeId,
    Record, RecordKey, Stamp, Value, Version, VersionVector,
};
use crate::store::{ApplyMode, ApplyReport, Checkpoint, ConflictReport};
use crate::sync::conflict::{resolve, Resolution, State};

/// What the engine needs from a store's write transaction.
pub trait Txn {
    fn get(&mut self, key: &RecordKey) -> Result<Option<Record>>;
    /// Inserts or replaces the record (its `cursor` is already assigned).
    fn put(&mut self, record: &Record) -> Result<()>;
    /// Raises the per-origin applied HLCs to those of `vv`.
    fn bump_origins(&mut self, vv: &VersionVector) -> Result<()>;
    fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()>;
    /// Live documents of a collection (for a collection delete).
    fn live_document_keys(&mut self, collection: &str) -> Result<Vec<RecordKey>>;
}

/// The node-level facts a write needs.
pub struct Ctx<'a> {
    pub node: NodeId,
    pub clock: &'a HlcClock,
}

fn is_live(r: &Option<Record>) -> bool {
    matches!(r, Some(r) if r.value != Value::Deleted)
}

/// A local write: a fresh HLC becomes both the version and the commit cursor.
fn local_write(txn: &mut impl Txn, ctx: &Ctx, key: RecordKey, value: Value) -> Result<Record> {
    local_write_with(txn, ctx, key, |_| value)
}

/// A local write whose value depends on the HLC it gets (settings stamps).
fn local_write_with(
    txn: &mut impl Txn,
    ctx: &Ctx,
    key: RecordKey,
    make_value: impl FnOnce(Hlc) -> Value,
) -> Result<Record> {
    let existing = txn.get(&key)?;
    let hlc = ctx.clock.now();
    let value = make_value(hlc);
    let base = existing
        .as_ref()
        .map(|r| r.version.vv.clone())
        .unwrap_or_default();
    let record = Record {
        version: Version {
            hlc,
            node: ctx.node,
            vv: base.bumped(ctx.node, hlc),
        },
        value,
        conflicts: existing
            .as_ref()
            .map(|r| r.conflicts.clone())
            .unwrap_or_default(),
        cursor: hlc,
        existed: is_live(&existing),
        key,
    };
    txn.put(&record)?;
    txn.bump_origins(&record.version.vv)?;
    Ok(record)
}

fn live_collection(txn: &mut impl Txn, name: &str) -> Result<Option<CollectionSettings>> {
    Ok(match txn.get(&RecordKey::collection(name))? {
        Some(Record {
            value: Value::Collection { settings, .. },
            ..
        }) => Some(settings),
        _ => None,
    })
}

fn require_collection(txn: &mut impl Txn, name: &str) -> Result<CollectionSettings> {
    live_collection(txn, name)?
        .ok_or_else(|| Error::NotFound(format!("collection '{name}' does not exist")))
}

/// A document's embedding must have the collection's declared dimension.
pub fn check_embedding(
    settings: &CollectionSettings,
    collection: &str,
    doc: &Document,
) -> Result<()> {
    if let (Some(dims), Some(e)) = (settings.embedding.dimensions, &doc.embedding) {
        if e.len() != dims as usize {
            return Err(Error::bad(format!(
                "document '{}' has an embedding of dimension {} but collection '{collection}' expects {dims}",
                doc.id,
                e.len()
            )));
        }
    }
    if let Some(e) = &doc.embedding {
        if e.iter().any(|x| !x.is_finite()) {
            return Err(Error::bad(format!(
                "document '{}' has a non-finite value in its embedding",
                doc.id
            )));
        }
    }
    Ok(())
}

pub fn put_collection(
    txn: &mut impl Txn,
    ctx: &Ctx,
    name: &str,
    settings: CollectionSettings,
) -> Result<Record> {
    validate_name(name).map_err(Error::BadRequest)?;
    settings.validate().map_err(Error::BadRequest)?;
    let key = RecordKey::collection(name);
    let current = txn.get(&key)?;
    let mut previous = None;
    if let Some(
        r @ Record {
            value:
                Value::Collection {
                    settings: s,
                    stamps,
                },
            version,
            ..
        },
    ) = &current
    {
        // Idempotent PUT: identical settings are not a new write.
        if *s == settings {
            return Ok(r.clone());
        }
        let dflt = Stamp {
            hlc: version.hlc,
            node: version.node,
        };
        previous = Some((s.clone(), stamps.clone(), dflt));
    }
    local_write_with(txn, ctx, key, |hlc| {
        let now = Stamp {
            hlc,
            node: ctx.node,
        };
        let stamps =
            settings.stamps_after_write(previous.as_ref().map(|(s, st, d)| (s, st, *d)), now);
        Value::Collection { settings, stamps }
    })
}

pub fn delete_collection(txn: &mut impl Txn, ctx: &Ctx, name: &str) -> Result<Record> {
    validate_name(name).map_err(Error::BadRequest)?;
    require_collection(txn, name)?;
    for key in txn.live_document_keys(name)? {
        local_write(txn, ctx, key, Value::Deleted)?;
    }
    local_write(txn, ctx, RecordKey::collection(name), Value::Deleted)
}

pub fn put_document(
    txn: &mut impl Txn,
    ctx: &Ctx,
    collection: &str,
    doc: Document,
) -> Result<Record> {
    validate_name(collection).map_err(Error::BadRequest)?;
    validate_doc_id(&doc.id).map_err(Error::BadRequest)?;
    if !doc.metadata.is_object() {
        return Err(Error::bad("metadata must be a JSON object"));
    }
    let settings = require_collection(txn, collection)?;
    check_embedding(&settings, collection, &doc)?;
    let key = RecordKey::document(collection, &doc.id);
    local_write(txn, ctx, key, Value::Document { document: doc })
}

pub fn delete_document(
    txn: &mut impl Txn,
    ctx: &Ctx,
    collection: &str,
    id: &str,
) -> Result<Record> {
    validate_name(collection).map_err(Error::BadRequest)?;
    validate_doc_id(id).map_err(Error::BadRequest)?;
    require_collection(txn, collection)?;
    let key = RecordKey::document(collection, id);
    if !is_live(&txn.get(&key)?) {
        return Err(Error::NotFound(format!(
            "document '{id}' does not exist in collection '{collection}'"
        )));
    }
    local_write(txn, ctx, key, Value::Deleted)
}

/// Why an incoming change must be refused before it touches anything.
fn refusal(txn: &mut impl Txn, ctx: &Ctx, change: &Change) -> Result<Option<Error>> {
    if let Err(e) = ctx.clock.check_drift(change.version.hlc) {
        return Ok(Some(Error::ClockDrift(e)));
    }
    let key = change.body.key();
    if let Err(e) = validate_name(&key.collection) {
        return Ok(Some(Error::BadRequest(e)));
    }
    if key.kind == Kind::Document {
        if let Err(e) = validate_doc_id(&key.id) {
            return Ok(Some(Error::BadRequest(e)));
        }
    }
    if !change.version.vv.0.contains_key(&change.version.node)
        || change.version.vv.get(change.version.node) < change.version.hlc
    {
        return Ok(Some(Error::bad(format!(
            "change for '{}' has a version vector that does not include its own write",
            key.collection
        ))));
    }
    match &change.body {
        ChangeBody::DocumentInsert { document, .. }
        | ChangeBody::DocumentUpdate { document, .. } => {
            if let Some(settings) = live_collection(txn, &key.collection)? {
                if let Err(e) = check_embedding(&settings, &key.collection, document) {
                    return Ok(Some(e));
                }
            }
        }
        ChangeBody::CollectionCreate { settings, .. } => {
            if let Err(e) = settings.validate() {
                return Ok(Some(Error::BadRequest(e)));
            }
        }
        _ => {}
    }
    Ok(None)
}

/// Applies remote changes. Every received version runs the HLC receive rule; every change
/// that alters state gets a fresh commit cursor in this node's log. The checkpoint, if any,
/// is saved in the same transaction (at the last change applied when `Prefix` stops early).
pub fn apply(
    txn: &mut impl Txn,
    ctx: &Ctx,
    changes: Vec<Change>,
    strategy: ConflictStrategy,
    mode: ApplyMode,
    checkpoint: Option<Checkpoint>,
) -> Result<ApplyReport> {
    let mut report = ApplyReport::default();
    let mut last_cursor: Option<Hlc> = None;
    for change in changes {
        if let Some(err) = refusal(txn, ctx, &change)? {
            match mode {
                ApplyMode::AllOrNothing => return Err(err),
                ApplyMode::Prefix => {
                    report.stopped = Some(err);
                    break;
                }
            }
        }
        ctx.clock.observe(change.version.hlc)?;
        let key = change.body.key();
        let local = txn.get(&key)?;
        let local_state = local.as_ref().map(|r| State {
            version: r.version.clone(),
            value: r.value.clone(),
            conflicts: r.conflicts.clone(),
        });
        let incoming = State {
            version: change.version,
            value: change.body.value(),
            conflicts: change.conflicts,
        };
        match resolve(local_state.as_ref(), &incoming, strategy) {
            Resolution::Keep => report.ignored += 1,
            Resolution::Store { state, conflict } => {
                if let Some(lost) = conflict {
                    report.conflicts.push(ConflictReport {
                        collection: key.collection.clone(),
                        kind: key.kind,
                        id: key.id.clone(),
                        winner: state.version.clone(),
                        loser_hlc: lost.hlc,
                        loser_node: lost.node,
                    });
                }
                let record = Record {
                    existed: is_live(&local),
                    cursor: ctx.clock.now(),
                    version: state.version,
                    value: state.value,
                    conflicts: state.conflicts,
                    key,
                };
                txn.put(&record)?;
                txn.bump_origins(&incoming.version.vv)?;
                report.applied += 1;
            }
        }
        last_cursor = Some(change.cursor);
    }
    if let Some(mut cp) = checkpoint {
        let cursor = if report.stopped.is_some() {
            last_cursor
        } else {
            Some(cp.cursor)
        };
        if let Some(cursor) = cursor {
            cp.cursor = cursor;
            txn.save_checkpoint(&cp)?;
            report.checkpoint = Some(cursor);
        }
    }
    Ok(report)
}
