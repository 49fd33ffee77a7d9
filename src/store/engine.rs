//! The write rules every store shares, run inside the store's own write transaction through
//! the small [`Txn`] interface. Commit cursors come from the node's HLC while the writer is
//! held, so cursor order is commit order and a reader never sees a later cursor commit before
//! an earlier one.

use crate::config::ConflictStrategy;
use crate::error::{Error, Result};
use crate::hlc::{Hlc, HlcClock};
use crate::merge::{resolve, Resolution, State};
use crate::model::{
    validate_doc_id, validate_name, Causality, Change, ChangeBody, CollectionSettings, Document,
    Kind, NodeId, Record, RecordKey, Stamp, Value, Version, VersionVector,
};
use crate::store::{ApplyMode, ApplyReport, Checkpoint, ConflictReport};

/// A stored record's version and flags, without its value.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordHead {
    pub version: Version,
    /// Live (not a tombstone).
    pub live: bool,
    pub has_conflicts: bool,
    pub cursor: Hlc,
}

/// What the engine needs from a store's write transaction.
pub trait Txn {
    fn get(&mut self, key: &RecordKey) -> Result<Option<Record>>;
    /// The record's version and flags without decoding its value: enough to see that an
    /// incoming version replaces it or is already covered, the usual cases when syncing.
    fn get_head(&mut self, key: &RecordKey) -> Result<Option<RecordHead>> {
        Ok(self.get(key)?.map(|r| RecordHead {
            live: r.value != Value::Deleted,
            has_conflicts: !r.conflicts.is_empty(),
            cursor: r.cursor,
            version: r.version,
        }))
    }
    /// Stores the record (its `cursor` is already assigned) in place of its current state,
    /// which this transaction has just read: `previous` is that state's cursor, or `None`
    /// if the record did not exist.
    fn put_after(&mut self, record: &Record, previous: Option<Hlc>) -> Result<()>;
    /// [`Txn::put_after`] for a record whose value is that of change number `index` of the
    /// batch being applied, unchanged: a store that encoded those values beforehand (off its
    /// writer) uses the encoding. The record is the store's to keep or drop.
    fn put_incoming(&mut self, record: Record, previous: Option<Hlc>, index: usize) -> Result<()> {
        let _ = index;
        self.put_after(&record, previous)
    }
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
    // The record was just read: its cursor tells the store where it is.
    txn.put_after(&record, existing.as_ref().map(|r| r.cursor))?;
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

/// Live collections' settings as seen by the changes of one batch: one lookup per collection
/// rather than one per document, kept current as the batch applies collection changes.
#[derive(Default)]
struct SettingsCache(std::collections::HashMap<String, Option<CollectionSettings>>);

impl SettingsCache {
    fn get(&mut self, txn: &mut impl Txn, name: &str) -> Result<Option<&CollectionSettings>> {
        if !self.0.contains_key(name) {
            let s = live_collection(txn, name)?;
            self.0.insert(name.to_string(), s);
        }
        Ok(self.0.get(name).and_then(Option::as_ref))
    }

    fn forget(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// Why an incoming change must be refused before it touches anything.
fn refusal(
    txn: &mut impl Txn,
    ctx: &Ctx,
    change: &Change,
    settings_cache: &mut SettingsCache,
) -> Result<Option<Error>> {
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
            if let Some(settings) = settings_cache.get(txn, &key.collection)? {
                if let Err(e) = check_embedding(settings, &key.collection, document) {
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
    let mut settings_cache = SettingsCache::default();
    // Per-origin applied HLCs only rise, so they are raised once per batch, with the
    // pointwise maximum of every applied version vector.
    let mut origins = VersionVector::default();
    for (index, change) in changes.into_iter().enumerate() {
        if let Some(err) = refusal(txn, ctx, &change, &mut settings_cache)? {
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
        let change_cursor = change.cursor;
        // First the stored version only: the common cases (a record this node has never
        // seen, a newer version of one it has, or one it has already; no conflicts on either
        // side) are decided without decoding the stored value or copying the incoming one,
        // with the same outcome as `resolve`.
        let head = txn.get_head(&key)?;
        let plain = change.conflicts.is_empty() && !head.as_ref().is_some_and(|h| h.has_conflicts);
        let order = head
            .as_ref()
            .map(|h| change.version.vv.compare(&h.version.vv));
        let existed = head.as_ref().is_some_and(|h| h.live);
        let previous = head.as_ref().map(|h| h.cursor);
        let incoming_vv;
        // The stored value will be the incoming one as it came.
        let mut unchanged = false;
        let resolution = match order {
            None | Some(Causality::Dominates) if plain => {
                unchanged = true;
                incoming_vv = change.version.vv.clone();
                Resolution::Store {
                    state: State {
                        value: change.body.into_value(),
                        version: change.version,
                        conflicts: change.conflicts,
                    },
                    conflict: None,
                }
            }
            Some(Causality::DominatedBy) if plain => {
                incoming_vv = VersionVector::default();
                Resolution::Keep
            }
            _ => {
                let local = match head {
                    Some(_) => txn.get(&key)?,
                    None => None,
                };
                let local_state = local.map(|r| State {
                    version: r.version,
                    value: r.value,
                    conflicts: r.conflicts,
                });
                let incoming = State {
                    value: change.body.into_value(),
                    version: change.version,
                    conflicts: change.conflicts,
                };
                incoming_vv = incoming.version.vv.clone();
                resolve(local_state.as_ref(), &incoming, strategy)
            }
        };
        match resolution {
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
                if key.kind == Kind::Collection {
                    settings_cache.forget(&key.collection);
                }
                let record = Record {
                    existed,
                    cursor: ctx.clock.now(),
                    version: state.version,
                    value: state.value,
                    conflicts: state.conflicts,
                    key,
                };
                if unchanged {
                    txn.put_incoming(record, previous, index)?;
                } else {
                    txn.put_after(&record, previous)?;
                }
                origins = origins.join(&incoming_vv);
                report.applied += 1;
            }
        }
        last_cursor = Some(change_cursor);
    }
    if !origins.0.is_empty() {
        txn.bump_origins(&origins)?;
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
