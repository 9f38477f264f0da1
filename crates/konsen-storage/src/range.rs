//! Reading the key-value state: [`KvStore::range`] with etcd's `Range`
//! semantics, and the key-range conventions shared with deletes.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::codec::decode_kv;
use crate::db::{Db, KvPosition, hist_cf};
use crate::deleter::DeleterHandle;
use crate::error::{RequestError, StorageError};
use crate::history::{owned, read_version};
use crate::kv::{KeyValue, KvStore, SharedHistIndex};
use crate::lease::SharedLeases;

/// How a range orders its keys (etcd `RangeRequest.SortOrder`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// By key, ascending (unless `sort_target` is not the key: then
    /// ascending by that target, as etcd does).
    #[default]
    None,
    Ascend,
    Descend,
}

/// What a range sorts by (etcd `RangeRequest.SortTarget`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A read of the keys in `[key, range_end)` (etcd `RangeRequest`).
///
/// `range_end` follows etcd: empty means the single key `key`; `[0]` means
/// every key `>= key` (so `key = [0]`, `range_end = [0]` is every key);
/// anything else is the exclusive upper end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// The most keys to return; 0 (or negative) for no limit.
    pub limit: i64,
    /// The revision to read at: 0 for the current one. Below the compacted
    /// revision or above the current one is an error; below 0 too.
    pub revision: i64,
    /// Return keys and their revisions, not their values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Revision filters, applied after the count (as etcd does); 0 means
    /// no bound.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

impl RangeRequest {
    /// Whether the answer is the stored keys in key order, cut at `limit`:
    /// no sorting, no filters (the fast path).
    pub fn is_plain(&self) -> bool {
        matches!(self.sort_order, SortOrder::None | SortOrder::Ascend)
            && self.sort_target == SortTarget::Key
            && self.min_mod_revision == 0
            && self.max_mod_revision == 0
            && self.min_create_revision == 0
            && self.max_create_revision == 0
    }
}

/// The answer to a [`RangeRequest`] (etcd `RangeResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The matching keys, sorted by key, at most `limit` of them; empty
    /// with `count_only`.
    pub kvs: Vec<KeyValue>,
    /// How many keys match, regardless of `limit`.
    pub count: i64,
    /// Whether `limit` left matching keys out.
    pub more: bool,
    /// The store's revision when the read ran (the header revision), also
    /// for a read at an older revision, as etcd's.
    pub revision: i64,
}

/// The revision a read at `requested` sees, given the store's `current`
/// and `compacted` revisions, or etcd's error.
pub(crate) fn read_revision(
    requested: i64,
    current: i64,
    compacted: i64,
) -> Result<i64, RequestError> {
    if requested < 0 {
        return Err(RequestError::NegativeRevision(requested));
    }
    if requested > current {
        return Err(RequestError::FutureRevision { requested, current });
    }
    if requested == 0 {
        return Ok(current);
    }
    if requested < compacted {
        return Err(RequestError::Compacted {
            requested,
            compacted,
        });
    }
    Ok(requested)
}

/// etcd's range answer from every key in the range (sorted by key, values
/// included): counts, filters, sorts and cuts at the limit. `revision` is
/// the header's: the store's current revision.
pub(crate) fn finish_range(
    mut kvs: Vec<KeyValue>,
    request: &RangeRequest,
    revision: i64,
) -> RangeResponse {
    let count = kvs.len() as i64;
    if request.count_only {
        return RangeResponse {
            kvs: Vec::new(),
            count,
            more: false,
            revision,
        };
    }
    let within =
        |value: i64, min: i64, max: i64| (min == 0 || value >= min) && (max == 0 || value <= max);
    kvs.retain(|kv| {
        within(
            kv.mod_revision,
            request.min_mod_revision,
            request.max_mod_revision,
        ) && within(
            kv.create_revision,
            request.min_create_revision,
            request.max_create_revision,
        )
    });
    let order = match (request.sort_order, request.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match request.sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
    let mut more = false;
    if let Ok(limit) = usize::try_from(request.limit)
        && limit > 0
        && kvs.len() > limit
    {
        kvs.truncate(limit);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value = bytes::Bytes::new();
        }
    }
    RangeResponse {
        kvs,
        count,
        more,
        revision,
    }
}

impl KvStore {
    /// Reads the keys a request selects.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, StorageError> {
        read_range(&self.db, &self.hist, request)
    }

    /// A handle that reads the latest applied state from other threads
    /// than the one applying entries.
    pub fn reader(&self) -> KvReader {
        KvReader {
            db: Arc::clone(&self.db),
            hist: self.hist.clone(),
            deleter: self.deleter.handle().clone(),
            leases: self.leases.clone(),
        }
    }
}

/// Reads the key-value state beside the node loop: each read sees one
/// consistent view (a RocksDB snapshot) of the latest applied state, its
/// revision included. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KvReader {
    pub(crate) db: Arc<Db>,
    pub(crate) hist: SharedHistIndex,
    pub(crate) deleter: DeleterHandle,
    pub(crate) leases: SharedLeases,
}

impl KvReader {
    /// [`KvStore::range`], at the latest applied state.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, StorageError> {
        read_range(&self.db, &self.hist, request)
    }

    /// Serves a read-only txn (see [`crate::Txn::is_read_only`]) at the
    /// latest applied revision: every operation reads the store as of
    /// that one revision. A txn that writes is refused: it must go through
    /// the log.
    pub fn txn(&self, txn: &crate::Txn) -> Result<crate::TxnResult, StorageError> {
        assert!(
            txn.is_read_only(),
            "read-only txn invariant: KvReader::txn was given a txn that writes"
        );
        let db = &*self.db;
        let position = self.hist.read().position();
        let state = ViewState {
            db,
            hist: &self.hist,
            leases: &self.leases,
            position,
        };
        let path = crate::txn::TxnPath::decide(&state, txn)?;
        crate::txn::check_path(&state, txn, &path)?.map_err(StorageError::Request)?;
        crate::txn::run_read_only(&state, txn, &path)
    }

    /// Waits until the history records of every compaction applied so far
    /// are deleted from the disk (etcd's `physical` compaction). Blocking:
    /// run it off the async runtime.
    pub fn wait_for_compaction(&self) {
        self.deleter.wait();
    }

    /// Every lease and its granted TTL, by id (etcd's `LeaseLeases`).
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.leases.read().leases()
    }

    /// Lease `id`'s granted TTL and attached keys (sorted), if it exists.
    pub fn lease(&self, id: i64) -> Option<(i64, Vec<Vec<u8>>)> {
        let table = self.leases.read();
        table.ttl(id).map(|ttl| (ttl, table.keys(id)))
    }

    /// The current and compacted revisions of the latest applied state.
    pub fn revisions(&self) -> Result<(i64, i64), StorageError> {
        let position = self.hist.read().position();
        Ok((position.revision, position.compacted))
    }
}

/// The applied state at one revision, for read-only txns.
struct ViewState<'a> {
    db: &'a Db,
    hist: &'a SharedHistIndex,
    leases: &'a SharedLeases,
    position: KvPosition,
}

impl crate::txn::TxnState for ViewState<'_> {
    fn revision(&self) -> i64 {
        self.position.revision
    }

    fn compacted(&self) -> i64 {
        self.position.compacted
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        let range = KeyRange::new(key.to_vec(), Vec::new());
        Ok(self.scan(&range)?.pop())
    }

    fn scan(&self, range: &KeyRange) -> Result<Vec<KeyValue>, StorageError> {
        history_at(self.db, self.hist, range, self.position.revision)
    }

    fn scan_at(&self, range: &KeyRange, revision: i64) -> Result<Vec<KeyValue>, StorageError> {
        history_at(self.db, self.hist, range, revision)
    }

    fn lease_exists(&self, id: i64) -> bool {
        self.leases.read().contains(id)
    }
}

/// The keys in `range` as they were at `revision`, read as of a view taken
/// with the history index that describes it. A revision that a compaction
/// has since removed is refused, as etcd refuses a read that a compaction
/// overtook.
fn history_at(
    db: &Db,
    hist: &SharedHistIndex,
    range: &KeyRange,
    revision: i64,
) -> Result<Vec<KeyValue>, StorageError> {
    let (view, position, located) = hist.view(db, |index, _| {
        if revision < index.compacted() {
            return Err(RequestError::Compacted {
                requested: revision,
                compacted: index.compacted(),
            });
        }
        Ok(owned(index.visible(range, revision)))
    });
    let cf = hist_cf(position.cf);
    located?
        .iter()
        .map(|(key, rev)| read_version(db, Some(&view), cf, key, *rev, false))
        .collect()
}

/// A range read of the latest applied state: the revision it reads and
/// the versions it needs are decided under the history index's read lock,
/// with a view that the index describes; the records are read from the
/// view after the lock is released.
fn read_range(
    db: &Db,
    hist: &SharedHistIndex,
    request: &RangeRequest,
) -> Result<RangeResponse, StorageError> {
    if request.key.is_empty() {
        return Err(RequestError::EmptyKey.into());
    }
    let range = KeyRange::new(request.key.clone(), request.range_end.clone());
    let plain = request.is_plain();
    let limit = usize::try_from(request.limit)
        .ok()
        .filter(|&l| l > 0 && plain)
        .unwrap_or(usize::MAX);
    let (view, position, located) = hist.view(db, |index, position| {
        let revision = read_revision(request.revision, position.revision, index.compacted())?;
        let visible = index.visible(&range, revision);
        let count = visible.len();
        // A plain read needs only the records it returns; the others all
        // of them, for the filters and the sort. A count needs none.
        let wanted = if request.count_only {
            0
        } else {
            count.min(limit)
        };
        let mut visible = visible;
        visible.truncate(wanted);
        Ok::<_, RequestError>((owned(visible), count))
    });
    let (located, count) = located?;
    if request.count_only {
        return Ok(RangeResponse {
            kvs: Vec::new(),
            count: count as i64,
            more: false,
            revision: position.revision,
        });
    }
    let cf = hist_cf(position.cf);
    let keys_only = request.keys_only && plain;
    let kvs = located
        .iter()
        .map(|(key, rev)| read_version(db, Some(&view), cf, key, *rev, keys_only))
        .collect::<Result<Vec<_>, _>>()?;
    // The header reports the current revision, also for a read at an
    // older one, as etcd's does.
    if !plain {
        return Ok(finish_range(kvs, request, position.revision));
    }
    Ok(RangeResponse {
        more: kvs.len() < count,
        kvs,
        count: count as i64,
        revision: position.revision,
    })
}

/// A set of keys in etcd's `(key, range_end)` form, resolved to a start and
/// an optional exclusive end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    start: Vec<u8>,
    /// `None`: no upper end.
    end: Option<Vec<u8>>,
}

impl KeyRange {
    pub fn new(key: Vec<u8>, range_end: Vec<u8>) -> KeyRange {
        let end = if range_end.is_empty() {
            // The smallest key above `key` is `key` followed by a zero byte.
            let mut next = key.clone();
            next.push(0);
            Some(next)
        } else if range_end == [0] {
            None
        } else {
            Some(range_end)
        };
        KeyRange { start: key, end }
    }

    /// The start and the exclusive end (`None`: no upper end).
    pub(crate) fn ends(&self) -> (&[u8], Option<&[u8]>) {
        (&self.start, self.end.as_deref())
    }

    /// The one key of a range of one key (etcd's empty `range_end`).
    pub fn single_key(&self) -> Option<&[u8]> {
        let end = self.end.as_deref()?;
        (end.len() == self.start.len() + 1
            && end.starts_with(&self.start)
            && end.last() == Some(&0))
        .then_some(self.start.as_slice())
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_ref().is_none_or(|end| key < end.as_slice())
    }

    /// Whether no key lies in the range (an end at or below the start).
    pub fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| *end <= self.start)
    }
}

/// Visits the stored records in `range` (as of `view`, if given) in key
/// order, with their raw bytes, until `visit` returns false.
pub(crate) fn scan_raw_in(
    db: &Db,
    view: Option<&rocksdb::Snapshot<'_>>,
    cf: &str,
    range: &KeyRange,
    mut visit: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StorageError> {
    if range.is_empty() {
        return Ok(());
    }
    let mut it = db.iter_in(view, cf, &range.start, range.end.as_deref());
    it.seek(&range.start);
    while let Some((key, value)) = it.item() {
        if !visit(key, value) {
            return Ok(());
        }
        it.next();
    }
    it.status().map_err(|e| db.error(e))
}

/// Visits the stored keys in `range`, decoded, in key order, until `visit`
/// returns false.
pub(crate) fn scan_stored(
    db: &Db,
    cf: &str,
    range: &KeyRange,
    visit: impl FnMut(KeyValue) -> bool,
) -> Result<(), StorageError> {
    scan_stored_in(db, None, cf, range, visit)
}

/// [`scan_stored`], as of `view` if given.
pub(crate) fn scan_stored_in(
    db: &Db,
    view: Option<&rocksdb::Snapshot<'_>>,
    cf: &str,
    range: &KeyRange,
    mut visit: impl FnMut(KeyValue) -> bool,
) -> Result<(), StorageError> {
    let mut bad = None;
    scan_raw_in(db, view, cf, range, |key, value| {
        match decode_kv(key, value, false) {
            Ok(kv) => visit(kv),
            Err(e) => {
                bad = Some((key.to_vec(), e));
                false
            }
        }
    })?;
    match bad {
        Some((key, e)) => Err(db.undecodable(format_args!("record of key {key:?}"), e)),
        None => Ok(()),
    }
}
