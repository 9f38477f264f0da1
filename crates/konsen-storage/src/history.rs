//! The key-value history: every version of every key since the compacted
//! revision. It is the only copy of the state: a read at the current
//! revision reads each key's latest version, a read at an old revision the
//! version it had then (etcd's backend keeps its keys the same way).
//!
//! Each write adds one record to the history column family:
//!
//! * key: the revision, `i64` big-endian, then the user key. RocksDB's
//!   byte order is then revision order, as etcd's backend keys are: each
//!   applied batch appends at the end of the memtable's skip list, and
//!   flushed tables hardly overlap, instead of a random-order insert per
//!   put (docs/performance.md, "What the history costs a put").
//! * value: the key's record as of that revision (`codec::encode_kv`), or
//!   nothing for a delete (a tombstone).
//!
//! Which revisions each key has is kept in memory, in [`HistIndex`] (etcd's
//! key index does the same), so a read looks up the one version it needs
//! and reads it with a point lookup, and a compaction finds what to delete,
//! without scanning the column family.
//!
//! Compacting at revision `c` keeps, for each key, every version after `c`
//! and the latest one at or before `c` unless that is a tombstone: exactly
//! what reads at revisions `c` and later need (etcd's rule). So a live
//! key's latest version is never compacted away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use konsen_core::Index;

use crate::codec::decode_kv;
use crate::db::{Db, KvPosition, hist_cf};
use crate::error::{DecodeError, StorageError};
use crate::index::{KeyIndex, KeyMeta};
use crate::kv::KeyValue;
use crate::range::KeyRange;

/// Bytes of the revision that starts a history key.
const REVISION_BYTES: usize = 8;

/// The history key of `key`'s version at `revision`.
pub(crate) fn history_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(REVISION_BYTES + key.len());
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits a history key into the user key and the revision.
pub(crate) fn parse_history_key(raw: &[u8]) -> Result<(Vec<u8>, i64), DecodeError> {
    if raw.len() <= REVISION_BYTES {
        return Err(DecodeError::Truncated {
            what: "history key",
            needed: REVISION_BYTES + 1,
            remaining: raw.len(),
        });
    }
    let (revision, key) = raw.split_at(REVISION_BYTES);
    let revision = i64::from_be_bytes(revision.try_into().expect("split at 8 bytes"));
    Ok((key.to_vec(), revision))
}

/// Splits a history key of the layout before revision-first keys (the
/// user key escaped, each `0x00` byte as `0x00 0xff` and `0x00 0x00` at
/// its end, then the revision), for converting such a data dir.
pub(crate) fn parse_key_first_history_key(raw: &[u8]) -> Result<(Vec<u8>, i64), DecodeError> {
    let invalid = |value: u64| DecodeError::Invalid {
        what: "key-first history key",
        field: "escape",
        value,
    };
    let mut key = Vec::with_capacity(raw.len().saturating_sub(10));
    let mut i = 0;
    loop {
        let Some(&b) = raw.get(i) else {
            return Err(DecodeError::Truncated {
                what: "key-first history key",
                needed: 2,
                remaining: 0,
            });
        };
        if b != 0 {
            key.push(b);
            i += 1;
            continue;
        }
        match raw.get(i + 1) {
            Some(0xff) => {
                key.push(0);
                i += 2;
            }
            Some(0x00) => {
                i += 2;
                break;
            }
            Some(&other) => return Err(invalid(other.into())),
            None => return Err(invalid(0x100)),
        }
    }
    let rest = &raw[i..];
    let revision: [u8; 8] = rest.try_into().map_err(|_| DecodeError::Truncated {
        what: "key-first history key",
        needed: 8,
        remaining: rest.len(),
    })?;
    Ok((key, i64::from_be_bytes(revision)))
}

/// Keys, each with the revision of the version of it to read, in key
/// order.
pub(crate) type Located = Vec<(Vec<u8>, i64)>;

/// [`HistIndex::visible`]'s answer, copied out of the index.
pub(crate) fn owned(located: Vec<(&[u8], i64)>) -> Located {
    located
        .into_iter()
        .map(|(key, rev)| (key.to_vec(), rev))
        .collect()
}

/// One version in the history: the key's state as of a revision, `None`
/// for a delete. Exported as [`crate::Change`]: what the change feed and
/// [`crate::KvReader::changes`] hand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub key: Vec<u8>,
    pub revision: i64,
    pub state: Option<KeyValue>,
}

/// One stored version of a key, as the index knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    revision: i64,
    deleted: bool,
}

impl Stored {
    fn of(v: &Version) -> Stored {
        Stored {
            revision: v.revision,
            deleted: v.state.is_none(),
        }
    }
}

/// The history records a compaction deletes, per key: how many of the
/// key's oldest versions (stored ones first, then those of the batch that
/// compacts), and their revisions.
#[derive(Debug, Default)]
pub(crate) struct CompactionDeletes {
    revision: i64,
    by_key: Vec<(Vec<u8>, Vec<i64>)>,
}

impl CompactionDeletes {
    /// The history keys to delete.
    pub(crate) fn keys(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.by_key
            .iter()
            .flat_map(|(key, revs)| revs.iter().map(|&rev| history_key(key, rev)))
    }
}

/// Every key's stored versions (revision, and whether it is a tombstone),
/// oldest first, and the state machine's position (its compacted revision
/// among it: reads below it are refused): derived state, built by one
/// scan of the history column family when the store opens or installs a
/// snapshot, and updated with each batch written. It grows with the
/// history (about 16 bytes per version, plus each key once), which
/// auto-compaction bounds. A put looks its key up in a hash map; the keys'
/// order, for reads of a range, is kept apart and changes only when a key
/// enters or leaves the history.
#[derive(Debug)]
pub(crate) struct HistIndex {
    versions: HashMap<Box<[u8]>, Vec<Stored>>,
    order: BTreeSet<Box<[u8]>>,
    /// Where the state the index describes stands, so that a reader
    /// holding the index's lock need not read it from the database.
    position: KvPosition,
}

impl HistIndex {
    /// Reads every key of the history column family of the state at
    /// `position`, and builds from it the index of the live keys' latest
    /// records too.
    pub(crate) fn load(
        db: &Db,
        position: KvPosition,
    ) -> Result<(HistIndex, KeyIndex), StorageError> {
        let cf = hist_cf(position.cf);
        let mut versions: HashMap<Box<[u8]>, Vec<Stored>> = HashMap::new();
        let mut live = KeyIndex::default();
        let mut it = db.iter(cf, &[], None);
        it.seek_to_first();
        while let Some((raw, value)) = it.item() {
            let (key, revision) =
                parse_history_key(raw).map_err(|e| db.undecodable("history key", e))?;
            // The column family is in revision order: each key's versions
            // arrive oldest first, and the last one seen is its latest.
            let meta = if value.is_empty() {
                None
            } else {
                let kv = decode_kv(&key, value, true)
                    .map_err(|e| db.undecodable(format_args!("history of key {key:?}"), e))?;
                Some(KeyMeta::of(&kv))
            };
            live.set(&key, meta);
            versions
                .entry(key.into_boxed_slice())
                .or_default()
                .push(Stored {
                    revision,
                    deleted: meta.is_none(),
                });
            it.next();
        }
        it.status().map_err(|e| db.error(e))?;
        let order = versions.keys().cloned().collect();
        let index = HistIndex {
            versions,
            order,
            position,
        };
        Ok((index, live))
    }

    /// Reads below this revision are refused.
    pub(crate) fn compacted(&self) -> i64 {
        self.position.compacted
    }

    /// Where the state the index describes stands.
    pub(crate) fn position(&self) -> KvPosition {
        self.position
    }

    /// Whether the index holds `key`'s version at `revision`.
    pub(crate) fn has_version(&self, key: &[u8], revision: i64) -> bool {
        self.versions.get(key).is_some_and(|stored| {
            stored
                .binary_search_by_key(&revision, |s| s.revision)
                .is_ok()
        })
    }

    /// The revision of `key`'s latest version, unless it is deleted (or
    /// was never written, or compacted away after its delete).
    pub(crate) fn latest(&self, key: &[u8]) -> Option<i64> {
        self.versions
            .get(key)
            .and_then(|stored| visible(stored, i64::MAX))
    }

    /// The keys in `range` that existed at `revision`, in key order, each
    /// with the revision of its version then.
    pub(crate) fn visible(&self, range: &KeyRange, revision: i64) -> Vec<(&[u8], i64)> {
        if range.is_empty() {
            return Vec::new();
        }
        if let Some(key) = range.single_key() {
            return self
                .versions
                .get_key_value(key)
                .and_then(|(key, stored)| Some((&**key, visible(stored, revision)?)))
                .into_iter()
                .collect();
        }
        let (start, end) = range.ends();
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        self.order
            .range::<[u8], _>((Bound::Included(start), upper))
            .filter_map(|key| Some((&**key, visible(&self.versions[key], revision)?)))
            .collect()
    }

    /// Takes in a batch that was written: its versions, in order, the
    /// compaction it applied, and the applied index and revision it
    /// reached.
    pub(crate) fn update(
        &mut self,
        versions: &[Version],
        compaction: Option<&CompactionDeletes>,
        applied: Index,
        revision: i64,
    ) {
        self.position.applied = applied;
        self.position.revision = revision;
        for v in versions {
            let stored = Stored::of(v);
            match self.versions.get_mut(v.key.as_slice()) {
                Some(revs) => revs.push(stored),
                None => {
                    let key = v.key.clone().into_boxed_slice();
                    self.order.insert(key.clone());
                    self.versions.insert(key, vec![stored]);
                }
            }
        }
        if let Some(compaction) = compaction {
            for (key, revs) in &compaction.by_key {
                let Some(stored) = self.versions.get_mut(key.as_slice()) else {
                    continue;
                };
                let n = revs.len().min(stored.len());
                debug_assert!(
                    stored[..n]
                        .iter()
                        .map(|s| s.revision)
                        .eq(revs[..n].iter().copied()),
                    "history index invariant: a compaction deletes each key's oldest versions"
                );
                stored.drain(..n);
                if stored.is_empty() {
                    self.versions.remove(key.as_slice());
                    self.order.remove(key.as_slice());
                }
            }
            self.position.compacted = compaction.revision;
        }
    }

    /// What compacting at `revision` deletes, given the `pending` versions
    /// of the batch that compacts (written with it, before the deletes).
    pub(crate) fn compaction(&self, revision: i64, pending: &[Version]) -> CompactionDeletes {
        let mut pending_by_key: BTreeMap<&[u8], Vec<Stored>> = BTreeMap::new();
        for v in pending.iter().filter(|v| v.revision <= revision) {
            pending_by_key
                .entry(&v.key)
                .or_default()
                .push(Stored::of(v));
        }
        let mut by_key = Vec::new();
        let mut finish = |key: &[u8], versions: &mut dyn Iterator<Item = Stored>| {
            let mut doomed: Vec<i64> = Vec::new();
            let mut last: Option<Stored> = None;
            for s in versions {
                if let Some(prev) = last.replace(s) {
                    doomed.push(prev.revision);
                }
            }
            if let Some(last) = last.filter(|s| s.deleted) {
                doomed.push(last.revision);
            }
            if !doomed.is_empty() {
                by_key.push((key.to_vec(), doomed));
            }
        };
        for (key, stored) in &self.versions {
            let kept = stored
                .iter()
                .copied()
                .take_while(|s| s.revision <= revision);
            let more = pending_by_key.remove(&**key).unwrap_or_default();
            finish(key, &mut kept.chain(more));
        }
        for (key, more) in pending_by_key {
            finish(key, &mut more.into_iter());
        }
        CompactionDeletes { revision, by_key }
    }
}

/// The revision of the version of a key with these `stored` versions
/// that a read at `revision` sees, unless the key did not exist then.
fn visible(stored: &[Stored], revision: i64) -> Option<i64> {
    let at_most = stored.partition_point(|s| s.revision <= revision);
    let s = stored[..at_most].last()?;
    (!s.deleted).then_some(s.revision)
}

/// Reads `key`'s version at `revision` from the history column family `cf`
/// (as of `view`), which the history index says holds it. With
/// `keys_only`, without the value.
pub(crate) fn read_version(
    db: &Db,
    view: Option<&rocksdb::Snapshot<'_>>,
    cf: &str,
    key: &[u8],
    revision: i64,
    keys_only: bool,
) -> Result<KeyValue, StorageError> {
    let Some(bytes) = db.get_in(view, cf, &history_key(key, revision))? else {
        return Err(db.corruption(format!(
            "the history of key {key:?} lacks its version at revision {revision}"
        )));
    };
    decode_kv(key, &bytes, keys_only)
        .map_err(|e| db.undecodable(format_args!("history of key {key:?}"), e))
}

/// The keys in `range` as they were at `revision`, sorted by key: the
/// versions `index` names, read from the history column family `cf` (as of
/// `view`, which `index` must describe), with `pending` laid over them:
/// versions of a batch being applied, not yet written, at revisions above
/// every stored one.
pub(crate) fn range_at(
    db: &Db,
    index: &HistIndex,
    view: Option<&rocksdb::Snapshot<'_>>,
    cf: &str,
    range: &KeyRange,
    revision: i64,
    pending: &[Version],
) -> Result<Vec<KeyValue>, StorageError> {
    let stored = index.visible(range, revision);
    if !pending
        .iter()
        .any(|v| v.revision <= revision && range.contains(&v.key))
    {
        return stored
            .into_iter()
            .map(|(key, rev)| read_version(db, view, cf, key, rev, false))
            .collect();
    }
    // Key -> the revision of its latest version at or before `revision`
    // (from the store), or that version (from the batch; None: deleted).
    enum Latest<'p> {
        Stored(i64),
        Pending(&'p Option<KeyValue>),
    }
    let mut latest: BTreeMap<&[u8], Latest<'_>> = stored
        .into_iter()
        .map(|(key, rev)| (key, Latest::Stored(rev)))
        .collect();
    for v in pending {
        if v.revision <= revision && range.contains(&v.key) {
            latest.insert(&v.key, Latest::Pending(&v.state));
        }
    }
    let mut kvs = Vec::with_capacity(latest.len());
    for (key, version) in latest {
        match version {
            Latest::Pending(state) => kvs.extend(state.iter().cloned()),
            Latest::Stored(rev) => kvs.push(read_version(db, view, cf, key, rev, false)?),
        }
    }
    Ok(kvs)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn history_keys_round_trip(key in proptest::collection::vec(any::<u8>(), 1..20), rev in 0i64..i64::MAX) {
            prop_assert_eq!(parse_history_key(&history_key(&key, rev)), Ok((key, rev)));
        }

        #[test]
        fn history_keys_sort_by_revision_then_key(
            a in proptest::collection::vec(0u8..3, 1..6), ra in 0i64..1000,
            b in proptest::collection::vec(0u8..3, 1..6), rb in 0i64..1000,
        ) {
            let want = (ra, a.clone()).cmp(&(rb, b.clone()));
            prop_assert_eq!(history_key(&a, ra).cmp(&history_key(&b, rb)), want);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..30)) {
            let _ = parse_history_key(&raw);
        }
    }
}
