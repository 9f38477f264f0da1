//! [`LogStore`]: the Raft log and hard state on RocksDB, implementing the
//! core's [`Storage`] contract.
//!
//! Entries live in the `log` column family under big-endian index keys;
//! the hard state and the purge point live in `meta`. Every append is one
//! `WriteBatch`, synced once: a `Ready`'s hard state and entries become
//! durable together, with a single fsync (group commit). A `Ready` that
//! only moves the commit index is written without a sync
//! ([`Storage::store_commit`]).

use std::path::Path;
use std::sync::Arc;

use konsen_core::storage::{Storage, StoredLog};
use konsen_core::{Entry, HardState, Index, Term};
use rocksdb::WriteBatch;

use crate::codec::{
    decode_entry, decode_hard_state, decode_log_key, decode_purged, encode_entry,
    encode_hard_state, encode_purged, log_key,
};
use crate::db::{BATCH_RECORD_OVERHEAD, CF_LOG, CF_META, Db, META_HARD_STATE, META_PURGED};
use crate::error::StorageError;

/// The durable Raft log of one node. Obtained from [`crate::RocksStore`].
#[derive(Debug)]
pub struct LogStore {
    db: Arc<Db>,
    /// Whether appends fsync (false only with `unsafe_no_fsync`).
    sync: bool,
    /// The last purged index and its term; entries start after it.
    purged_index: Index,
    purged_term: Term,
    /// The last stored index (`purged_index` when no entry is stored).
    last_index: Index,
    /// The stored hard state, kept in memory like the log's extent.
    hard_state: HardState,
}

impl LogStore {
    /// Reads the purge point and the log's extent, and checks that they
    /// agree with each other.
    pub(crate) fn open(db: Arc<Db>, sync: bool) -> Result<LogStore, StorageError> {
        let (purged_index, purged_term) = match db.get(CF_META, META_PURGED)? {
            Some(bytes) => decode_purged(&bytes).map_err(|e| db.undecodable("purge point", e))?,
            None => (0, 0),
        };
        let mut it = db.iter(CF_LOG, &[], None);
        it.seek_to_first();
        let first_key = it.key().map(decode_log_key).transpose();
        it.seek_to_last();
        let last_key = it.key().map(decode_log_key).transpose();
        it.status().map_err(|e| db.error(e))?;
        drop(it);
        let first_key = first_key.map_err(|e| db.undecodable("first log key", e))?;
        let last_key = last_key.map_err(|e| db.undecodable("last log key", e))?;
        let last_index = match (first_key, last_key) {
            (Some(first), Some(last)) => {
                if first != purged_index + 1 {
                    return Err(db.corruption(format!(
                        "the log starts at index {first}, but the purge point is {purged_index}"
                    )));
                }
                last
            }
            _ => purged_index,
        };
        let hard_state = match db.get(CF_META, META_HARD_STATE)? {
            Some(bytes) => {
                decode_hard_state(&bytes).map_err(|e| db.undecodable("hard state", e))?
            }
            None => HardState::default(),
        };
        let log = LogStore {
            db,
            sync,
            purged_index,
            purged_term,
            last_index,
            hard_state,
        };
        // Committed entries are never dropped: a commit index past the log
        // means stored entries were lost.
        let commit = hard_state.commit;
        if commit > last_index {
            return Err(log.db.corruption(format!(
                "the hard state commits index {commit}, but the log ends at {last_index}"
            )));
        }
        Ok(log)
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The first stored index (the purge point + 1), without the `Result`
    /// of [`Storage::first_index`]: it is kept in memory.
    pub fn first(&self) -> Index {
        self.purged_index + 1
    }

    /// The last stored index, kept in memory like [`LogStore::first`].
    pub fn last(&self) -> Index {
        self.last_index
    }

    /// Adds to `batch` what replaces the whole log with a snapshot ending
    /// at `(index, term)`: every stored entry goes, and the purge point
    /// moves to `index`. Call [`LogStore::restored_snapshot`] once the batch
    /// is written.
    pub(crate) fn replace_with_snapshot(&self, batch: &mut WriteBatch, index: Index, term: Term) {
        if self.last_index > self.purged_index {
            batch.delete_range_cf(
                self.db.cf(CF_LOG),
                log_key(self.first()),
                log_key(self.last_index + 1),
            );
        }
        batch.put_cf(self.db.cf(CF_META), META_PURGED, encode_purged(index, term));
    }

    pub(crate) fn restored_snapshot(&mut self, index: Index, term: Term, hard_state: HardState) {
        self.purged_index = index;
        self.purged_term = term;
        self.last_index = index;
        self.hard_state = hard_state;
    }

    /// The last index and term purged behind a snapshot (0, 0 if none).
    pub fn purged(&self) -> (Index, Term) {
        (self.purged_index, self.purged_term)
    }

    pub(crate) fn syncs(&self) -> bool {
        self.sync
    }

    /// Reads `[lo, hi]`, checking that every index is there exactly once.
    fn read(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, StorageError> {
        let upper = log_key(hi + 1);
        let mut it = self.db.iter(CF_LOG, &log_key(lo), Some(&upper[..]));
        it.seek(log_key(lo));
        let mut entries = Vec::with_capacity((hi - lo + 1).min(4096) as usize);
        let mut expected = lo;
        while let Some((key, value)) = it.item() {
            let index = decode_log_key(key).map_err(|e| self.db.undecodable("log key", e))?;
            if index != expected {
                return Err(self.db.corruption(format!(
                    "log entry {expected} is missing (found {index} instead)"
                )));
            }
            let entry = decode_entry(index, value)
                .map_err(|e| self.db.undecodable(format_args!("log entry {index}"), e))?;
            entries.push(entry);
            expected += 1;
            it.next();
        }
        it.status().map_err(|e| self.db.error(e))?;
        if expected != hi + 1 {
            return Err(self
                .db
                .corruption(format!("log entries [{expected}, {hi}] are missing")));
        }
        Ok(entries)
    }
}

impl LogStore {
    /// Writes `entries` and `hard_state` in one batch, synced if `sync`.
    /// With `extend_only`, the entries must start right after the last
    /// stored index (they replace nothing).
    fn write_append(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
        sync: bool,
        extend_only: bool,
    ) -> Result<(), StorageError> {
        // Sized up front: growing the batch's buffer by doubling showed in
        // the leader's profile as copies.
        let bytes: usize = entries
            .iter()
            .map(|e| e.size_bytes() + BATCH_RECORD_OVERHEAD)
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes + BATCH_RECORD_OVERHEAD);
        let mut new_last = self.last_index;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let contiguous = entries.windows(2).all(|w| w[1].index == w[0].index + 1);
            let replaces = first.index <= self.last_index;
            if first.index <= self.purged_index
                || first.index > self.last_index + 1
                || !contiguous
                || (extend_only && replaces)
            {
                return Err(StorageError::NotContiguous {
                    purged: self.purged_index,
                    last: self.last_index,
                    first: first.index,
                });
            }
            let log = self.db.cf(CF_LOG);
            // Entries from `first` on are overwritten below; any stored past
            // the new last index belong to the replaced suffix and go.
            if last.index < self.last_index {
                batch.delete_range_cf(log, log_key(last.index + 1), log_key(self.last_index + 1));
            }
            for entry in entries {
                batch.put_cf(log, log_key(entry.index), encode_entry(entry));
            }
            new_last = last.index;
        }
        if let Some(hs) = hard_state {
            batch.put_cf(self.db.cf(CF_META), META_HARD_STATE, encode_hard_state(&hs));
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.db.write(batch, sync)?;
        self.last_index = new_last;
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        Ok(())
    }

    /// Refuses a hard state that changes the stored term or vote.
    fn check_commit_only(&self, hard_state: &HardState) -> Result<(), StorageError> {
        let stored = self.hard_state;
        if (stored.term, stored.vote) != (hard_state.term, hard_state.vote) {
            return Err(StorageError::NotCommitOnly {
                stored_term: stored.term,
                stored_vote: stored.vote,
                term: hard_state.term,
                vote: hard_state.vote,
            });
        }
        Ok(())
    }
}

impl Storage for LogStore {
    type Error = StorageError;

    fn append(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        self.write_append(hard_state, entries, self.sync, false)
    }

    fn append_unsynced(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        if let Some(hs) = &hard_state {
            self.check_commit_only(hs)?;
        }
        // Unsynced, on the same WAL as everything else: the next synced
        // write (of any column family) makes these durable with it.
        self.write_append(hard_state, entries, false, true)
    }

    fn store_commit(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.check_commit_only(&hard_state)?;
        // Unsynced, on the same WAL as everything else: it lands after the
        // entries it commits, and before the applied state that follows.
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db.cf(CF_META),
            META_HARD_STATE,
            encode_hard_state(&hard_state),
        );
        self.db.write(batch, false)?;
        self.hard_state = hard_state;
        Ok(())
    }

    fn load(&self) -> Result<StoredLog, StorageError> {
        let entries = if self.last_index > self.purged_index {
            self.read(self.purged_index + 1, self.last_index)?
        } else {
            Vec::new()
        };
        Ok(StoredLog {
            hard_state: self.hard_state,
            purged_index: self.purged_index,
            purged_term: self.purged_term,
            entries,
        })
    }

    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, StorageError> {
        let (first, last) = (self.first(), self.last());
        if lo < first || hi > last || lo > hi {
            return Err(StorageError::OutOfRange {
                lo,
                hi,
                first,
                last,
            });
        }
        self.read(lo, hi)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.first())
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.last())
    }

    fn purge(&mut self, index: Index) -> Result<(), StorageError> {
        if index <= self.purged_index {
            return Ok(());
        }
        if index > self.last_index {
            return Err(StorageError::OutOfRange {
                lo: index,
                hi: index,
                first: self.first(),
                last: self.last(),
            });
        }
        let term = self.read(index, index)?[0].term;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.db.cf(CF_LOG),
            log_key(self.first()),
            log_key(index + 1),
        );
        batch.put_cf(self.db.cf(CF_META), META_PURGED, encode_purged(index, term));
        // The purge point and the deletion land together, so the log never
        // starts anywhere but right after the recorded purge point.
        self.db.write(batch, self.sync)?;
        self.purged_index = index;
        self.purged_term = term;
        Ok(())
    }
}
