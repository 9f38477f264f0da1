//! The RocksDB database under a node's data dir: how it is opened, its
//! column families and fixed keys, and the read and write helpers every
//! part of the store goes through (checksummed reads, errors that name the
//! path).

use std::path::{Path, PathBuf};

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBRawIterator, DBRecoveryMode, ErrorKind, Options,
    ReadOptions, WriteBatch, WriteOptions,
};

use crate::codec::{decode_kv_cf, decode_kv_state, decode_revision};
use crate::error::{DecodeError, StorageError};
use crate::kv::REVISION_INITIAL;

/// The Raft log: `u64` big-endian index → encoded entry.
pub(crate) const CF_LOG: &str = "log";
/// Small records: identity, hard state, purge point, state machine position.
pub(crate) const CF_META: &str = "meta";
/// The key-value state of the builds before [`HIST_LAYOUT_HISTORY_ONLY`]:
/// user key → encoded record. Empty since (the history holds the state),
/// but still named: `meta`'s `kv_cf` names `kv` or `kv_alt` to say which
/// history column family is in use. The other receives an incoming
/// snapshot, so that installing it is one switch.
pub(crate) const CF_KV: &str = "kv";
pub(crate) const CF_KV_ALT: &str = "kv_alt";
/// The key-value history, the state: every version of every key since the
/// compacted revision, under `history_key(key, revision)` (see
/// `history.rs`). `hist` goes with `kv` and `hist_alt` with `kv_alt`.
pub(crate) const CF_HIST: &str = "hist";
pub(crate) const CF_HIST_ALT: &str = "hist_alt";
/// Every column family the database must have. RocksDB always has
/// `default`; konsen leaves it empty.
const CFS: [&str; 7] = [
    "default",
    CF_LOG,
    CF_META,
    CF_KV,
    CF_KV_ALT,
    CF_HIST,
    CF_HIST_ALT,
];
/// The column families of a data dir written before history was kept: such
/// a dir is opened, given the history column families, and migrated
/// (`KvStore::open`).
const CFS_BEFORE_HISTORY: [&str; 5] = ["default", CF_LOG, CF_META, CF_KV, CF_KV_ALT];

/// Bytes a write batch spends on one record besides its key and value
/// (tag, column family, lengths, and our own record headers), rounded
/// up: batches are sized with it before they are filled.
pub(crate) const BATCH_RECORD_OVERHEAD: usize = 64;

/// Keys in [`CF_META`].
pub(crate) const META_IDENTITY: &[u8] = b"identity";
pub(crate) const META_HARD_STATE: &[u8] = b"hard_state";
pub(crate) const META_PURGED: &[u8] = b"purged";
pub(crate) const META_KV_STATE: &[u8] = b"kv_state";
pub(crate) const META_KV_CF: &[u8] = b"kv_cf";
/// The compacted revision: reads below it are refused. Absent: nothing was
/// compacted (every revision since 1 is kept).
pub(crate) const META_KV_COMPACTED: &[u8] = b"kv_compacted";
/// The layout of the key-value state: absent in a dir written by the
/// builds that keyed the history by user key first (2e7eaf8 to 631b33d);
/// [`HIST_LAYOUT_REVISION_FIRST`] in one written by the builds that keyed
/// it revision first and kept each key's current record in `kv` too
/// (3f50243 to e4c235d); [`HIST_LAYOUT_HISTORY_ONLY`] since: the history,
/// revision first, is the only copy (`history.rs`).
pub(crate) const META_HIST_LAYOUT: &[u8] = b"hist_layout";
pub(crate) const HIST_LAYOUT_REVISION_FIRST: &[u8] = &[2];
pub(crate) const HIST_LAYOUT_HISTORY_ONLY: &[u8] = &[3];

/// The smallest memtable accepted for the history column families, and
/// the one the emptied `kv` column families get.
const MEMTABLE_BYTES_MIN: usize = 64 * 1024;

fn cf_options(name: &str, hist_memtable_bytes: usize) -> Options {
    let mut options = Options::default();
    match name {
        // Empty since the history holds the state; only a conversion of an
        // older data dir reads them, and clears them.
        CF_KV | CF_KV_ALT => options.set_write_buffer_size(MEMTABLE_BYTES_MIN),
        // No Bloom filter: every read is a point read of a history key that
        // the index names, and the tables, written in revision order, mostly
        // cover disjoint revisions, so a read finds its table by key range
        // (a compaction's deletes, at old revisions, widen some of them).
        CF_HIST | CF_HIST_ALT => {
            options.set_write_buffer_size(hist_memtable_bytes.max(MEMTABLE_BYTES_MIN));
        }
        _ => {}
    }
    options
}

/// Where the state machine stands; see [`Db::kv_position`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KvPosition {
    pub cf: &'static str,
    pub applied: konsen_core::Index,
    pub revision: i64,
    /// Reads below this revision are refused; 0 before any compaction.
    pub compacted: i64,
}

/// The key-value column family that is not `cf`.
pub(crate) fn other_kv_cf(cf: &'static str) -> &'static str {
    if cf == CF_KV { CF_KV_ALT } else { CF_KV }
}

/// The history column family that goes with the key-value column family
/// `cf`.
pub(crate) fn hist_cf(cf: &'static str) -> &'static str {
    if cf == CF_KV { CF_HIST } else { CF_HIST_ALT }
}

/// RocksDB's own info logs kept in the data dir.
const INFO_LOG_FILES_MAX: usize = 8;
/// Write-ahead log kept on disk. A WAL file goes only once every column
/// family with data in it is flushed; `meta`, small and rewritten all the
/// time, would otherwise pin every WAL file since the start (a 1M-write
/// run kept 600 MiB of them). Past this size RocksDB flushes the column
/// families that hold the oldest file back. Kept small so that WAL files
/// become obsolete, and so reusable ([`WAL_RECYCLE_FILES`]), within
/// seconds under load (64 MiB took most of a 5-second benchmark row).
const WAL_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Obsolete WAL files kept to be written over instead of deleted. An
/// fdatasync after appending to a file must also commit the file's new
/// size to the file system's journal; after overwriting one it need not.
/// Here a synced 4 KiB overwrite takes 92 µs (35 µs of it kernel CPU)
/// against 153 µs (53 µs) for an append. A recycled file's stale records
/// carry an older log number, so recovery stops at them like at a torn
/// tail (`PointInTime` recovery; RocksDB turns recycling off for the
/// recovery modes it cannot serve). docs/performance.md, item 12.
const WAL_RECYCLE_FILES: usize = 4;

/// An open database and the path it lives at.
#[derive(Debug)]
pub(crate) struct Db {
    rocks: DB,
    path: PathBuf,
}

impl Db {
    /// Opens the database at `path`, creating it only if `fresh` (the
    /// directory was new or empty). Every column family must already exist
    /// in an existing database: a missing one means this is not a konsen
    /// data dir, or a damaged one, and is refused rather than recreated.
    pub(crate) fn open(
        path: &Path,
        fresh: bool,
        hist_memtable_bytes: usize,
    ) -> Result<Db, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(fresh);
        options.create_missing_column_families(fresh);
        // Check everything RocksDB can check (file sizes, manifest, WAL
        // records) and fail instead of working around damage.
        options.set_paranoid_checks(true);
        // After a crash, replay the WAL up to the first bad record: a torn
        // tail is the unsynced write the crash interrupted, and every synced
        // write lies before it.
        options.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        options.set_keep_log_file_num(INFO_LOG_FILES_MAX);
        options.set_max_total_wal_size(WAL_BYTES_MAX);
        options.set_recycle_log_file_num(WAL_RECYCLE_FILES);
        // Compactions run at the lowest CPU priority (nice 19), so that
        // they take the cores' idle time rather than the node loop's: under
        // a sustained write load the thread that serves clients and
        // replicates is the node's bottleneck, and compaction can wait
        // (RocksDB slows writes down when level 0 piles up). Flushes keep
        // the normal priority: a late flush stops writes outright.
        // docs/performance.md, item 16.
        let mut env = rocksdb::Env::new().map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        env.lower_thread_pool_cpu_priority();
        options.set_env(&env);
        // A dir from before history was kept has exactly the older column
        // families; it gets the history ones (`KvStore::open` migrates it,
        // on this open or, if this one fails later, on the next).
        // Any other set of column families is refused as before.
        if !fresh && let Ok(existing) = DB::list_cf(&options, path) {
            let mut existing: Vec<&str> = existing.iter().map(String::as_str).collect();
            existing.sort_unstable();
            let mut before = CFS_BEFORE_HISTORY.to_vec();
            before.sort_unstable();
            if existing == before {
                options.create_missing_column_families(true);
            }
        }
        let cfs = CFS
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(name, hist_memtable_bytes)));
        let rocks = DB::open_cf_descriptors(&options, path, cfs).map_err(|source| {
            if source.kind() == ErrorKind::Corruption {
                StorageError::Corruption {
                    path: path.to_path_buf(),
                    detail: source.into_string(),
                }
            } else {
                StorageError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Ok(Db {
            rocks,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.rocks
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} was opened with the database"))
    }

    /// Maps a RocksDB error to ours: corruption is reported as such, and
    /// both name the data dir.
    pub(crate) fn error(&self, source: rocksdb::Error) -> StorageError {
        if source.kind() == ErrorKind::Corruption {
            self.corruption(source.into_string())
        } else {
            StorageError::Rocks {
                path: self.path.clone(),
                source,
            }
        }
    }

    pub(crate) fn corruption(&self, detail: impl Into<String>) -> StorageError {
        StorageError::Corruption {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// A record read back from disk that does not decode: the disk or a
    /// bug damaged it.
    pub(crate) fn undecodable(
        &self,
        where_: impl std::fmt::Display,
        err: DecodeError,
    ) -> StorageError {
        self.corruption(format!("{where_}: {err}"))
    }

    /// Read options for every read: verify block checksums.
    pub(crate) fn read_options() -> ReadOptions {
        let mut options = ReadOptions::default();
        options.set_verify_checksums(true);
        options
    }

    pub(crate) fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_in(None, cf, key)
    }

    /// [`Db::get`], as of `view` if given.
    pub(crate) fn get_in(
        &self,
        view: Option<&rocksdb::Snapshot<'_>>,
        cf: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        match view {
            Some(view) => view.get_cf_opt(self.cf(cf), key, Self::read_options()),
            None => self
                .rocks
                .get_cf_opt(self.cf(cf), key, &Self::read_options()),
        }
        .map_err(|e| self.error(e))
    }

    /// Where the state machine stands (its column family, applied index
    /// and revision), now or as of `view`.
    pub(crate) fn kv_position(
        &self,
        view: Option<&rocksdb::Snapshot<'_>>,
    ) -> Result<KvPosition, StorageError> {
        let cf = match self.get_in(view, CF_META, META_KV_CF)? {
            Some(bytes) => {
                decode_kv_cf(&bytes).map_err(|e| self.undecodable("key-value column family", e))?
            }
            None => CF_KV,
        };
        let (applied, revision) = match self.get_in(view, CF_META, META_KV_STATE)? {
            Some(bytes) => decode_kv_state(&bytes)
                .map_err(|e| self.undecodable("state machine position", e))?,
            None => (0, REVISION_INITIAL),
        };
        let compacted = match self.get_in(view, CF_META, META_KV_COMPACTED)? {
            Some(bytes) => {
                decode_revision(&bytes).map_err(|e| self.undecodable("compacted revision", e))?
            }
            None => 0,
        };
        Ok(KvPosition {
            cf,
            applied,
            revision,
            compacted,
        })
    }

    /// A checksummed iterator over `cf`, bounded to `[lower, upper)`.
    pub(crate) fn iter(&self, cf: &str, lower: &[u8], upper: Option<&[u8]>) -> DBRawIterator<'_> {
        self.iter_in(None, cf, lower, upper)
    }

    /// [`Db::iter`], as of `view` if given.
    pub(crate) fn iter_in<'s>(
        &'s self,
        view: Option<&rocksdb::Snapshot<'s>>,
        cf: &str,
        lower: &[u8],
        upper: Option<&[u8]>,
    ) -> DBRawIterator<'s> {
        let mut options = Self::read_options();
        if let Some(view) = view {
            options.set_snapshot(view);
        }
        options.set_iterate_lower_bound(lower);
        if let Some(upper) = upper {
            options.set_iterate_upper_bound(upper);
        }
        self.rocks.raw_iterator_cf_opt(self.cf(cf), options)
    }

    /// A point-in-time view of the whole database.
    pub(crate) fn snapshot(&self) -> rocksdb::Snapshot<'_> {
        self.rocks.snapshot()
    }

    /// Deletes every key of `cf` (two writes, whatever its size: a range
    /// tombstone and the last key). Not synced.
    pub(crate) fn clear(&self, cf: &str) -> Result<(), StorageError> {
        let mut it = self.iter(cf, &[], None);
        it.seek_to_first();
        let first = it.key().map(<[u8]>::to_vec);
        it.seek_to_last();
        let last = it.key().map(<[u8]>::to_vec);
        it.status().map_err(|e| self.error(e))?;
        drop(it);
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(cf), first.as_slice(), last.as_slice());
        batch.delete_cf(self.cf(cf), last);
        self.write(batch, false)
    }

    /// Writes `batch` atomically; with `sync`, fsyncs the WAL before
    /// returning.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.rocks
            .write_opt(batch, &options)
            .map_err(|e| self.error(e))
    }

    /// Approximate bytes the database takes: table files plus memtables
    /// over every column family.
    pub(crate) fn size_bytes(&self) -> Result<u64, StorageError> {
        let mut total = 0u64;
        for name in CFS {
            let cf = self.cf(name);
            for property in [
                "rocksdb.total-sst-files-size",
                "rocksdb.cur-size-all-mem-tables",
            ] {
                let value = self
                    .rocks
                    .property_int_value_cf(cf, property)
                    .map_err(|e| self.error(e))?;
                total += value.unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Flushes every memtable to table files (tests use it to get data into
    /// `.sst` files).
    pub(crate) fn flush(&self) -> Result<(), StorageError> {
        for name in CFS {
            self.rocks
                .flush_cf(self.cf(name))
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}
