//! Reading the key-value state: [`KvStore::range`] with etcd's `Range`
//! semantics, and the key-range conventions shared with deletes.

use std::ops::Bound;

use std::sync::Arc;

use crate::codec::decode_kv;
use crate::db::Db;
use crate::error::{RequestError, StorageError};
use crate::kv::{KeyValue, KvStore};

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
    /// The revision to read at: 0 (or negative) or the current revision.
    /// Older revisions are not kept yet, so anything else is an error.
    pub revision: i64,
    /// Return keys and their revisions, not their values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
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
    /// The revision the read saw (the header revision).
    pub revision: i64,
}

impl KvStore {
    /// Reads the keys a request selects, at the current revision.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, StorageError> {
        range_in(&self.db, None, self.cf, self.revision, request)
    }

    /// A handle that reads the latest applied state from other threads
    /// than the one applying entries.
    pub fn reader(&self) -> KvReader {
        KvReader {
            db: Arc::clone(&self.db),
        }
    }
}

/// Reads the key-value state beside the node loop: each read sees one
/// consistent view (a RocksDB snapshot) of the latest applied state, its
/// revision included. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KvReader {
    db: Arc<Db>,
}

impl KvReader {
    /// [`KvStore::range`], at the latest applied state.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, StorageError> {
        let db = &*self.db;
        let view = db.snapshot();
        let position = db.kv_position(Some(&view))?;
        range_in(db, Some(&view), position.cf, position.revision, request)
    }
}

/// A range read of `cf` (as of `view`, if given) whose current revision
/// is `current`.
fn range_in(
    db: &Db,
    view: Option<&rocksdb::Snapshot<'_>>,
    cf: &str,
    current: i64,
    request: &RangeRequest,
) -> Result<RangeResponse, StorageError> {
    if request.key.is_empty() {
        return Err(RequestError::EmptyKey.into());
    }
    if request.revision > current {
        return Err(RequestError::FutureRevision {
            requested: request.revision,
            current,
        }
        .into());
    }
    if request.revision > 0 && request.revision != current {
        return Err(RequestError::HistoricalRead {
            requested: request.revision,
            current,
        }
        .into());
    }
    let limit = usize::try_from(request.limit)
        .ok()
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let mut kvs = Vec::new();
    let mut count: i64 = 0;
    let mut bad = None;
    let mut visit = |key: &[u8], value: &[u8]| {
        count += 1;
        if !request.count_only && kvs.len() < limit {
            match decode_kv(key, value, request.keys_only) {
                Ok(kv) => kvs.push(kv),
                Err(e) => {
                    bad = Some((key.to_vec(), e));
                    return false;
                }
            }
        }
        true
    };
    if request.range_end.is_empty() {
        // One key: a point lookup, which bloom filters can answer without
        // touching most table files (an iterator visits every level).
        if let Some(value) = db.get_in(view, cf, &request.key)? {
            visit(&request.key, &value);
        }
    } else {
        let range = KeyRange::new(request.key.clone(), request.range_end.clone());
        scan_raw_in(db, view, cf, &range, visit)?;
    }
    if let Some((key, e)) = bad {
        return Err(db.undecodable(format_args!("record of key {key:?}"), e));
    }
    Ok(RangeResponse {
        more: !request.count_only && (kvs.len() as i64) < count,
        kvs,
        count,
        revision: current,
    })
}

/// A set of keys in etcd's `(key, range_end)` form, resolved to a start and
/// an optional exclusive end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange {
    start: Vec<u8>,
    /// `None`: no upper end.
    end: Option<Vec<u8>>,
}

impl KeyRange {
    pub(crate) fn new(key: Vec<u8>, range_end: Vec<u8>) -> KeyRange {
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

    pub(crate) fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| *end <= self.start)
    }

    /// The range as map bounds; only for a non-empty range (a map panics on
    /// a start above the end).
    pub(crate) fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        assert!(
            !self.is_empty(),
            "key range invariant: bounds() of an empty range"
        );
        let end = match &self.end {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        (Bound::Included(self.start.as_slice()), end)
    }
}

/// Visits the stored records in `range` in key order, with their raw
/// bytes, until `visit` returns false.
pub(crate) fn scan_raw(
    db: &Db,
    cf: &str,
    range: &KeyRange,
    visit: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StorageError> {
    scan_raw_in(db, None, cf, range, visit)
}

/// [`scan_raw`], as of `view` if given.
fn scan_raw_in(
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
    mut visit: impl FnMut(KeyValue) -> bool,
) -> Result<(), StorageError> {
    let mut bad = None;
    scan_raw(db, cf, range, |key, value| {
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
