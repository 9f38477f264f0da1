//! Reading the history as a stream of changes, for Watch: every version
//! written in a key range from a revision on, in revision order. The live
//! changes come from the store's feed ([`crate::KvStore::take_changes`]);
//! this reads what a watcher missed, or asked for from the past.

use std::collections::HashSet;

use crate::codec::decode_kv;
use crate::db::hist_cf;
use crate::error::{RequestError, StorageError};
use crate::history::{Version, parse_history_key};
use crate::range::{KeyRange, KvReader};

/// A page of changes: what [`KvReader::changes`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangesRead {
    /// The changes in the range, in revision order; all of one revision
    /// (a txn's) are in the same page.
    pub changes: Vec<Version>,
    /// The revision to read the next page from: every change in the range
    /// below it is in this page or an earlier one.
    pub next: i64,
    /// The store's revision as of the read. `next` is above it once the
    /// reader has caught up.
    pub revision: i64,
}

impl KvReader {
    /// The changes to keys in `key`..`range_end` (etcd's range rules) at
    /// revisions from `from` on, at most about `changes_max` of them (a
    /// revision is never split; at least one revision is read) and after scanning at most
    /// `CHANGES_SCAN_MAX` records of other keys.
    ///
    /// A delete is a version without state. Refused with
    /// [`RequestError::Compacted`] if `from` is below the compacted
    /// revision. At the compacted revision itself only the versions the
    /// compaction kept are read (a delete there is gone, as in etcd).
    pub fn changes(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        from: i64,
        changes_max: usize,
    ) -> Result<ChangesRead, StorageError> {
        // A page holds at least one revision, so that paging advances.
        let changes_max = changes_max.max(1);
        let range = KeyRange::new(key, range_end);
        let db = &*self.db;
        let (view, position, kept_at_compacted) = self.hist.view(db, |index, position| {
            if from < position.compacted {
                return Err(StorageError::Request(RequestError::Compacted {
                    requested: from,
                    compacted: position.compacted,
                }));
            }
            if from != position.compacted || position.compacted == 0 {
                return Ok(None);
            }
            // Records at the compacted revision may be ones the compaction
            // dropped and the deleter has not reached yet: the index says
            // which were kept. One revision's records: a short scan.
            let prefix = position.compacted.to_be_bytes();
            let mut kept = HashSet::new();
            let mut it = db.iter(hist_cf(position.cf), &prefix, None);
            it.seek(prefix);
            while let Some((raw, _)) = it.item() {
                let Some(key) = raw.strip_prefix(&prefix[..]) else {
                    break;
                };
                if index.has_version(key, position.compacted) {
                    kept.insert(key.to_vec());
                }
                it.next();
            }
            it.status().map_err(|e| db.error(e))?;
            Ok(Some(kept))
        });
        let kept_at_compacted = kept_at_compacted?;
        let mut read = ChangesRead {
            changes: Vec::new(),
            next: position.revision + 1,
            revision: position.revision,
        };
        if range.is_empty() || from > position.revision {
            read.next = read.next.max(from);
            return Ok(read);
        }
        let start = from.max(0).to_be_bytes();
        let mut it = db.iter_in(Some(&view), hist_cf(position.cf), &start, None);
        it.seek(start);
        let mut scanned = 0usize;
        let mut last_revision = None;
        while let Some((raw, value)) = it.item() {
            let (key, revision) =
                parse_history_key(raw).map_err(|e| db.undecodable("history key", e))?;
            if last_revision != Some(revision)
                && (read.changes.len() >= changes_max || scanned >= CHANGES_SCAN_MAX)
            {
                read.next = revision;
                return Ok(read);
            }
            last_revision = Some(revision);
            scanned += 1;
            let kept = revision != position.compacted
                || kept_at_compacted
                    .as_ref()
                    .is_none_or(|keys| keys.contains(&key));
            if kept && range.contains(&key) {
                let state =
                    if value.is_empty() {
                        None
                    } else {
                        Some(decode_kv(&key, value, false).map_err(|e| {
                            db.undecodable(format_args!("history of key {key:?}"), e)
                        })?)
                    };
                read.changes.push(Version {
                    key,
                    revision,
                    state,
                });
            }
            it.next();
        }
        it.status().map_err(|e| db.error(e))?;
        Ok(read)
    }
}

/// History records [`KvReader::changes`] scans in one call at most (of
/// any key; whole revisions), so that a watch of a rare key replaying a
/// long history answers in pages.
pub const CHANGES_SCAN_MAX: usize = 10_000;
