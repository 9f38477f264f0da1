//! The key-value history: every version of every key since the compacted
//! revision, so that a read at an old revision sees the store as it was.
//!
//! Each write adds one record to the history column family (beside the
//! key's current record in the key-value column family, which serves
//! reads at the current revision):
//!
//! * key: the user key in an order-preserving escape (each `0x00` byte
//!   becomes `0x00 0xff`, and `0x00 0x00` ends the key), then the
//!   revision, `i64` big-endian. RocksDB's byte order is then (user key,
//!   revision) order, so one iterator over a key range visits each key's
//!   versions oldest first, and no key's records mix with another's.
//! * value: the key's record as of that revision (`codec::encode_kv`), or
//!   nothing for a delete (a tombstone).
//!
//! Compacting at revision `c` keeps, for each key, every version after `c`
//! and the latest one at or before `c` unless that is a tombstone: exactly
//! what reads at revisions `c` and later need (etcd's rule).

use std::collections::BTreeMap;

use crate::codec::decode_kv;
use crate::db::Db;
use crate::error::{DecodeError, StorageError};
use crate::kv::KeyValue;
use crate::range::KeyRange;

/// The bytes that end an escaped user key.
const KEY_END: [u8; 2] = [0x00, 0x00];

/// Appends `key` escaped and terminated.
fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&KEY_END);
}

/// The history key of `key`'s version at `revision`.
pub(crate) fn history_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + 8 + 2);
    escape_into(&mut out, key);
    out.extend_from_slice(&revision.to_be_bytes());
    out
}

/// The first history key of `key` (below every revision of it).
fn history_key_start(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    escape_into(&mut out, key);
    out
}

/// Splits a history key into the user key and the revision.
pub(crate) fn parse_history_key(raw: &[u8]) -> Result<(Vec<u8>, i64), DecodeError> {
    let invalid = |value: u64| DecodeError::Invalid {
        what: "history key",
        field: "escape",
        value,
    };
    let mut key = Vec::with_capacity(raw.len().saturating_sub(10));
    let mut i = 0;
    loop {
        let Some(&b) = raw.get(i) else {
            return Err(DecodeError::Truncated {
                what: "history key",
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
        what: "history key",
        needed: 8,
        remaining: rest.len(),
    })?;
    Ok((key, i64::from_be_bytes(revision)))
}

/// The history keys of every key in `range`: `[lower, upper)`.
fn history_bounds(range: &KeyRange) -> (Vec<u8>, Option<Vec<u8>>) {
    let (start, end) = range.ends();
    (history_key_start(start), end.map(history_key_start))
}

/// One version in the history: the key's state as of a revision, `None`
/// for a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub key: Vec<u8>,
    pub revision: i64,
    pub state: Option<KeyValue>,
}

/// Decodes a history record.
fn decode_version(db: &Db, raw_key: &[u8], value: &[u8]) -> Result<Version, StorageError> {
    let (key, revision) =
        parse_history_key(raw_key).map_err(|e| db.undecodable("history key", e))?;
    let state = if value.is_empty() {
        None
    } else {
        Some(
            decode_kv(&key, value, false)
                .map_err(|e| db.undecodable(format_args!("history of key {key:?}"), e))?,
        )
    };
    Ok(Version {
        key,
        revision,
        state,
    })
}

/// The keys in `range` as they were at `revision`, sorted by key, from the
/// stored history (as of `view`) with `pending` laid over it: versions of
/// a batch being applied, not yet written, at revisions above every
/// stored one.
pub(crate) fn range_at(
    db: &Db,
    view: Option<&rocksdb::Snapshot<'_>>,
    cf: &str,
    range: &KeyRange,
    revision: i64,
    pending: &[Version],
) -> Result<Vec<KeyValue>, StorageError> {
    if range.is_empty() {
        return Ok(Vec::new());
    }
    // Key -> its latest version at or before `revision` (None: deleted).
    let mut latest: BTreeMap<Vec<u8>, (i64, Option<KeyValue>)> = BTreeMap::new();
    let (lower, upper) = history_bounds(range);
    let mut it = db.iter_in(view, cf, &lower, upper.as_deref());
    it.seek(&lower);
    let mut bad = None;
    while let Some((raw_key, value)) = it.item() {
        // Peek at the revision before decoding the whole record.
        let rev_at = raw_key.len().saturating_sub(8);
        let rev = i64::from_be_bytes(raw_key[rev_at..].try_into().unwrap_or([0xff; 8]));
        if rev <= revision {
            match decode_version(db, raw_key, value) {
                Ok(v) => {
                    latest.insert(v.key, (v.revision, v.state));
                }
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        it.next();
    }
    if let Some(e) = bad {
        return Err(e);
    }
    it.status().map_err(|e| db.error(e))?;
    for v in pending {
        if v.revision <= revision && range.contains(&v.key) {
            let newer = latest
                .get(&v.key)
                .is_none_or(|(known, _)| *known <= v.revision);
            if newer {
                latest.insert(v.key.clone(), (v.revision, v.state.clone()));
            }
        }
    }
    Ok(latest.into_values().filter_map(|(_, kv)| kv).collect())
}

/// A key's versions at or before a compaction point: (revision, deleted).
type Versions = Vec<(i64, bool)>;

/// The history records to delete to compact at `revision` (see the module
/// doc), given the stored history of `cf` and the `pending` versions of the
/// batch that compacts (which are written with it, before the deletes).
pub(crate) fn compaction_deletes(
    db: &Db,
    cf: &str,
    revision: i64,
    pending: &[Version],
) -> Result<Vec<Vec<u8>>, StorageError> {
    // Per key, its versions at or before `revision`: (revision, deleted).
    let mut pending_by_key: BTreeMap<&[u8], Versions> = BTreeMap::new();
    for v in pending.iter().filter(|v| v.revision <= revision) {
        pending_by_key
            .entry(&v.key)
            .or_default()
            .push((v.revision, v.state.is_none()));
    }
    let mut deletes = Vec::new();
    let mut group: Option<(Vec<u8>, Versions)> = None;
    let finish = |key: &[u8], mut versions: Versions, deletes: &mut Vec<Vec<u8>>| {
        versions.sort_unstable();
        let Some(&(last, deleted)) = versions.last() else {
            return;
        };
        for &(rev, _) in &versions {
            if rev != last || deleted {
                deletes.push(history_key(key, rev));
            }
        }
    };
    let mut it = db.iter(cf, &[], None);
    it.seek_to_first();
    while let Some((raw_key, value)) = it.item() {
        let (key, rev) =
            parse_history_key(raw_key).map_err(|e| db.undecodable("history key", e))?;
        if group.as_ref().is_none_or(|(k, _)| *k != key) {
            if let Some((k, mut versions)) = group.take() {
                versions.extend(pending_by_key.remove(k.as_slice()).unwrap_or_default());
                finish(&k, versions, &mut deletes);
            }
            group = Some((key, Vec::new()));
        }
        if rev <= revision {
            let (_, versions) = group.as_mut().expect("a group was just started");
            versions.push((rev, value.is_empty()));
        }
        it.next();
    }
    it.status().map_err(|e| db.error(e))?;
    if let Some((k, mut versions)) = group.take() {
        versions.extend(pending_by_key.remove(k.as_slice()).unwrap_or_default());
        finish(&k, versions, &mut deletes);
    }
    for (key, versions) in pending_by_key {
        finish(key, versions, &mut deletes);
    }
    Ok(deletes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn history_keys_round_trip(key in proptest::collection::vec(any::<u8>(), 0..20), rev in 0i64..i64::MAX) {
            prop_assert_eq!(parse_history_key(&history_key(&key, rev)), Ok((key, rev)));
        }

        #[test]
        fn history_keys_sort_by_key_then_revision(
            a in proptest::collection::vec(0u8..3, 0..6), ra in 0i64..1000,
            b in proptest::collection::vec(0u8..3, 0..6), rb in 0i64..1000,
        ) {
            let want = (a.clone(), ra).cmp(&(b.clone(), rb));
            prop_assert_eq!(history_key(&a, ra).cmp(&history_key(&b, rb)), want);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..30)) {
            let _ = parse_history_key(&raw);
        }
    }
}
