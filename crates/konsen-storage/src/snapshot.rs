//! Snapshots of the key-value state machine, for followers that need log
//! entries the leader has purged.
//!
//! * **Sending** ([`Snapshots::read`]): a RocksDB snapshot gives a
//!   consistent view of the whole database without stopping writes. The
//!   view's applied index, revision and the term of the entry at that index
//!   (from the log, or the purge point) make the [`SnapshotHeader`]; the
//!   key-value records follow in chunks of at most `chunk_bytes_max` bytes
//!   (a record larger than that travels alone).
//! * **Receiving** ([`Snapshots::receive`]): chunks are checked record by
//!   record and written into the history column family that is not in use
//!   (cleared first), never synced one by one. Nothing the node serves
//!   changes, so a broken transfer or a crash leaves the old state whole,
//!   and the next transfer starts over.
//! * **Installing** ([`install_snapshot`]): one synced `WriteBatch` switches
//!   the column family in use, records the applied index and revision, and
//!   replaces the log with the snapshot's purge point (plus the hard state
//!   the core asked for). Either all of it is on disk or none of it. The
//!   column family that was in use is then cleared.
//!
//! A chunk's data is a sequence of records: key length (`u32` big-endian),
//! key, record length, record (the stored format of `codec::encode_kv`).
//! First come the current records, keys strictly increasing; then one
//! record with an empty key whose record is the compacted revision (`i64`
//! big-endian); then the history (`history.rs`): history keys strictly
//! increasing, each with the key's record at that revision or nothing for
//! a delete. So a follower that installs a snapshot answers reads at every
//! revision since the compaction point, as the leader does. Last, one
//! record with an empty key whose record is [`LEASES_MARKER`], then one
//! record per lease: the id (`i64` big-endian), ids strictly increasing as
//! bytes, and its TTL (`i64` big-endian). The history
//! alone holds the current records too (each live key's latest version);
//! they are sent apart for receivers that kept them apart (the builds
//! before `HIST_LAYOUT_HISTORY_ONLY`), and for senders without a history
//! they are all the receiver gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use konsen_core::{HardState, Index, Term};
use rocksdb::WriteBatch;

use crate::codec::{
    Reader, decode_entry, decode_kv, decode_purged, encode_hard_state, encode_kv_cf,
    encode_kv_state, encode_revision, log_key, put_bytes,
};
use crate::db::{
    CF_LOG, CF_META, Db, KvPosition, META_HARD_STATE, META_KV_CF, META_KV_COMPACTED, META_KV_STATE,
    META_PURGED, hist_cf, other_kv_cf,
};
use crate::deleter::DeleterHandle;
use crate::error::StorageError;
use crate::history::{HistIndex, Located, history_key, owned, parse_history_key};
use crate::kv::{KvStore, REVISION_INITIAL, SharedHistIndex, drop_leftovers};
use crate::lease::{
    LeaseTable, META_LEASE_END, META_LEASE_PREFIX, encode_lease, lease_key, read_leases,
};
use crate::log::LogStore;

/// The record that starts the lease part of a snapshot (after an empty
/// key; the history marker's record is 8 bytes, so the two never meet).
const LEASES_MARKER: &[u8] = b"leases";
use crate::range::KeyRange;

/// What a snapshot covers: the state machine after applying every entry up
/// to `index` (of term `term`), at `revision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub index: Index,
    pub term: Term,
    pub revision: i64,
}

/// What one pass over a snapshot saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub keys: u64,
    pub bytes: u64,
    pub chunks: u64,
}

/// Access to snapshots of a store, for tasks beside the node loop. Cheap
/// to clone; obtained from [`KvStore::snapshots`].
#[derive(Clone, Debug)]
pub struct Snapshots {
    db: Arc<Db>,
    hist: SharedHistIndex,
    deleter: DeleterHandle,
    receiving: Arc<AtomicBool>,
}

impl KvStore {
    /// The handle through which snapshots are read and received.
    pub fn snapshots(&self) -> Snapshots {
        Snapshots {
            db: Arc::clone(&self.db),
            hist: self.hist.clone(),
            deleter: self.deleter.handle().clone(),
            receiving: Arc::clone(&self.receiving),
        }
    }
}

impl Snapshots {
    /// Reads a consistent snapshot of the state machine (blocking: run it
    /// off the async runtime). `on_header` gets the header first, then
    /// `on_chunk` each chunk in key order; either returning false stops the
    /// read early (the receiver went away).
    pub fn read(
        &self,
        chunk_bytes_max: usize,
        on_header: impl FnOnce(SnapshotHeader) -> bool,
        mut on_chunk: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<SnapshotStats, StorageError> {
        let db = &*self.db;
        let (view, live) = self.live();
        let (header, cf) = view_header(db, &view)?;
        let hist = hist_cf(cf);
        let mut stats = SnapshotStats::default();
        if !on_header(header) {
            return Ok(stats);
        }
        let compacted = db.kv_position(Some(&view))?.compacted;
        let mut chunk = Vec::new();
        let mut emit =
            |chunk: &mut Vec<u8>, key: &[u8], record: &[u8], stats: &mut SnapshotStats| {
                if !chunk.is_empty() && chunk.len() + record_bytes(key, record) > chunk_bytes_max {
                    stats.chunks += 1;
                    stats.bytes += chunk.len() as u64;
                    if !on_chunk(std::mem::take(chunk)) {
                        return false;
                    }
                }
                put_record(chunk, key, record);
                true
            };
        for (key, revision) in &live {
            let record = live_record(db, &view, hist, key, *revision)?;
            if !emit(&mut chunk, key, &record, &mut stats) {
                return Ok(stats);
            }
            stats.keys += 1;
        }
        if !emit(&mut chunk, &[], &compacted.to_be_bytes(), &mut stats) {
            return Ok(stats);
        }
        let mut it = db.iter_in(Some(&view), hist, &[], None);
        it.seek_to_first();
        while let Some((key, record)) = it.item() {
            if !emit(&mut chunk, key, record, &mut stats) {
                return Ok(stats);
            }
            it.next();
        }
        it.status().map_err(|e| db.error(e))?;
        drop(it);
        if !emit(&mut chunk, &[], LEASES_MARKER, &mut stats) {
            return Ok(stats);
        }
        for (id, ttl) in read_leases(db, Some(&view))? {
            if !emit(
                &mut chunk,
                &id.to_be_bytes(),
                &ttl.to_be_bytes(),
                &mut stats,
            ) {
                return Ok(stats);
            }
        }
        if !chunk.is_empty() {
            stats.chunks += 1;
            stats.bytes += chunk.len() as u64;
            on_chunk(chunk);
        }
        Ok(stats)
    }

    /// A checksum (CRC-32) over every key and record of the state machine,
    /// with the header of the view it was computed on: two nodes at the
    /// same applied index must agree on it.
    pub fn hash(&self) -> Result<(u32, SnapshotHeader), StorageError> {
        let db = &*self.db;
        let (view, live) = self.live();
        let (header, cf) = view_header(db, &view)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut framed = Vec::new();
        for (key, revision) in &live {
            let record = live_record(db, &view, hist_cf(cf), key, *revision)?;
            framed.clear();
            put_record(&mut framed, key, &record);
            hasher.update(&framed);
        }
        hasher.update(&header.revision.to_be_bytes());
        Ok((hasher.finalize(), header))
    }

    /// A view of the database, and every live key in it with the revision
    /// of its latest version, in key order.
    fn live(&self) -> (rocksdb::Snapshot<'_>, Located) {
        let (view, _, live) = self.hist.view(&self.db, |index, _| {
            owned(index.visible(&KeyRange::new(vec![0], vec![0]), i64::MAX))
        });
        (view, live)
    }

    /// Starts receiving the snapshot `header` describes. Only one snapshot
    /// is received at a time: a second is refused with
    /// [`StorageError::SnapshotBusy`] until the first is dropped or
    /// installed.
    pub fn receive(&self, header: SnapshotHeader) -> Result<Receiving, StorageError> {
        if header.index == 0 || header.term == 0 || header.revision < REVISION_INITIAL {
            return Err(StorageError::BadSnapshot(format!(
                "header out of range: index {}, term {}, revision {}",
                header.index, header.term, header.revision
            )));
        }
        if self.receiving.swap(true, Ordering::AcqRel) {
            return Err(StorageError::SnapshotBusy);
        }
        let busy = BusyGuard(Arc::clone(&self.receiving));
        // The column family in use only changes by installing a received
        // snapshot, and none is being received but this one.
        let cf = other_kv_cf(self.db.kv_position(None)?.cf);
        // Deletes queued for it while it was in use must not land in what
        // is received now.
        self.deleter.wait();
        self.db.clear(cf)?;
        self.db.clear(hist_cf(cf))?;
        Ok(Receiving {
            db: Arc::clone(&self.db),
            cf,
            header,
            history: None,
            leases: None,
            last_key: None,
            stats: SnapshotStats::default(),
            busy,
        })
    }
}

/// The header of `view`, and the column family holding its state.
fn view_header(
    db: &Db,
    view: &rocksdb::Snapshot<'_>,
) -> Result<(SnapshotHeader, &'static str), StorageError> {
    let KvPosition {
        cf,
        applied: index,
        revision,
        ..
    } = db.kv_position(Some(view))?;
    let (purged_index, purged_term) = match db.get_in(Some(view), CF_META, META_PURGED)? {
        Some(bytes) => decode_purged(&bytes).map_err(|e| db.undecodable("purge point", e))?,
        None => (0, 0),
    };
    let term = if index == purged_index {
        purged_term
    } else {
        // Applied entries after the purge point are in the log: the log is
        // purged only up to what is applied.
        let bytes = db
            .get_in(Some(view), CF_LOG, &log_key(index))?
            .ok_or_else(|| {
                db.corruption(format!(
                    "applied entry {index} is neither in the log nor its purge point {purged_index}"
                ))
            })?;
        decode_entry(index, &bytes)
            .map_err(|e| db.undecodable(format_args!("log entry {index}"), e))?
            .term
    };
    Ok((
        SnapshotHeader {
            index,
            term,
            revision,
        },
        cf,
    ))
}

/// The record of `key`'s latest version, at `revision`, from the history
/// column family `cf` as of `view`.
fn live_record(
    db: &Db,
    view: &rocksdb::Snapshot<'_>,
    cf: &str,
    key: &[u8],
    revision: i64,
) -> Result<Vec<u8>, StorageError> {
    db.get_in(Some(view), cf, &history_key(key, revision))?
        .ok_or_else(|| {
            db.corruption(format!(
                "the history of key {key:?} lacks its latest version, at revision {revision}"
            ))
        })
}

fn record_bytes(key: &[u8], record: &[u8]) -> usize {
    8 + key.len() + record.len()
}

fn put_record(out: &mut Vec<u8>, key: &[u8], record: &[u8]) {
    put_bytes(out, key);
    put_bytes(out, record);
}

/// Clears the "receiving" flag when the transfer ends, however it ends.
#[derive(Debug)]
struct BusyGuard(Arc<AtomicBool>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A snapshot being received. Dropping it abandons the transfer; what was
/// written is cleared by the next one.
#[derive(Debug)]
pub struct Receiving {
    db: Arc<Db>,
    cf: &'static str,
    header: SnapshotHeader,
    /// The compacted revision, once the history part has begun.
    history: Option<i64>,
    /// The leases, once their part has begun (they are few and small, and
    /// are written with the install, so they wait in memory).
    leases: Option<Vec<(i64, i64)>>,
    last_key: Option<Vec<u8>>,
    stats: SnapshotStats,
    busy: BusyGuard,
}

impl Receiving {
    pub fn header(&self) -> SnapshotHeader {
        self.header
    }

    pub fn stats(&self) -> SnapshotStats {
        self.stats
    }

    /// Checks one chunk from the sender and writes its records. A chunk
    /// that does not parse, or keys out of order, is
    /// [`StorageError::BadSnapshot`] (and nothing of it is written).
    pub fn add_chunk(&mut self, data: &[u8]) -> Result<(), StorageError> {
        let bad = |what: String| {
            StorageError::BadSnapshot(format!("chunk {}: {what}", self.stats.chunks))
        };
        let mut batch = WriteBatch::default();
        let hist = self.db.cf(hist_cf(self.cf));
        let mut records = Reader::new("snapshot chunk", data);
        let mut keys = 0;
        let mut last_key = self.last_key.clone();
        let mut history = self.history;
        let mut leases = self.leases.clone();
        while !records.is_empty() {
            let key = records.bytes().map_err(|e| bad(e.to_string()))?;
            let record = records.bytes().map_err(|e| bad(e.to_string()))?;
            if key.is_empty() && record == LEASES_MARKER {
                if history.is_none() || leases.is_some() {
                    return Err(bad("a lease marker out of place".into()));
                }
                leases = Some(Vec::new());
                last_key = None;
                continue;
            }
            if let Some(leases) = &mut leases {
                if last_key.as_deref().is_some_and(|last| last >= key) {
                    return Err(bad("lease ids out of order".into()));
                }
                let (Ok(id), Ok(ttl)) = (<[u8; 8]>::try_from(key), <[u8; 8]>::try_from(record))
                else {
                    return Err(bad(format!(
                        "lease record of {} and {} bytes",
                        key.len(),
                        record.len()
                    )));
                };
                let (id, ttl) = (i64::from_be_bytes(id), i64::from_be_bytes(ttl));
                if let Err(e) = crate::command::check_lease_grant(id, ttl) {
                    return Err(bad(format!("lease {id}: {e}")));
                }
                leases.push((id, ttl));
                last_key = Some(key.to_vec());
                continue;
            }
            if key.is_empty() {
                if history.is_some() {
                    return Err(bad("a second history marker".into()));
                }
                let compacted = record
                    .try_into()
                    .map(i64::from_be_bytes)
                    .map_err(|_| bad(format!("history marker of {} bytes", record.len())))?;
                if !(0..=self.header.revision).contains(&compacted) {
                    return Err(bad(format!(
                        "compacted revision {compacted} outside the snapshot's revision {}",
                        self.header.revision
                    )));
                }
                history = Some(compacted);
                last_key = None;
                continue;
            }
            if last_key.as_deref().is_some_and(|last| last >= key) {
                return Err(bad("keys out of order".into()));
            }
            if history.is_some() {
                let (user_key, revision) =
                    parse_history_key(key).map_err(|e| bad(e.to_string()))?;
                if revision < REVISION_INITIAL || revision > self.header.revision {
                    return Err(bad(format!(
                        "history revision {revision} outside the snapshot's revision {}",
                        self.header.revision
                    )));
                }
                if !record.is_empty() {
                    let kv = decode_kv(&user_key, record, true).map_err(|e| bad(e.to_string()))?;
                    if kv.mod_revision != revision {
                        return Err(bad(format!(
                            "history record at revision {revision} says mod revision {}",
                            kv.mod_revision
                        )));
                    }
                }
                batch.put_cf(hist, key, record);
                last_key = Some(key.to_vec());
                continue;
            }
            let kv = decode_kv(key, record, true).map_err(|e| bad(e.to_string()))?;
            if kv.create_revision < REVISION_INITIAL
                || kv.create_revision > kv.mod_revision
                || kv.mod_revision > self.header.revision
                || kv.version < 1
            {
                return Err(bad(format!(
                    "key revisions {}/{} (version {}) do not fit the snapshot's revision {}",
                    kv.create_revision, kv.mod_revision, kv.version, self.header.revision
                )));
            }
            // The key's latest version, in the history; the history part,
            // if the sender has one, holds it too, alike.
            batch.put_cf(hist, history_key(key, kv.mod_revision), record);
            last_key = Some(key.to_vec());
            keys += 1;
        }
        self.db.write(batch, false)?;
        self.history = history;
        self.leases = leases;
        self.last_key = last_key;
        self.stats.keys += keys;
        self.stats.bytes += data.len() as u64;
        self.stats.chunks += 1;
        Ok(())
    }

    /// Every chunk arrived: ready to install.
    pub fn finish(self) -> StagedSnapshot {
        StagedSnapshot {
            header: self.header,
            // A sender without history: only the snapshot's own revision
            // can be read.
            compacted: self.history.unwrap_or(self.header.revision),
            leases: self.leases.unwrap_or_default(),
            stats: self.stats,
            cf: self.cf,
            db: self.db,
            _busy: self.busy,
        }
    }
}

/// A snapshot received whole, waiting to be installed.
#[derive(Debug)]
pub struct StagedSnapshot {
    header: SnapshotHeader,
    compacted: i64,
    leases: Vec<(i64, i64)>,
    stats: SnapshotStats,
    cf: &'static str,
    db: Arc<Db>,
    _busy: BusyGuard,
}

impl StagedSnapshot {
    pub fn header(&self) -> SnapshotHeader {
        self.header
    }

    pub fn stats(&self) -> SnapshotStats {
        self.stats
    }
}

/// Makes `staged` the node's state: the state machine becomes the
/// snapshot's, the log is replaced by its purge point, and `hard_state`
/// (the core's, with the commit index at least the snapshot's) is written
/// in the same synced batch. All or nothing.
pub fn install_snapshot(
    log: &mut LogStore,
    kv: &mut KvStore,
    staged: StagedSnapshot,
    hard_state: HardState,
) -> Result<(), StorageError> {
    assert!(
        Arc::ptr_eq(&staged.db, &kv.db),
        "snapshot install invariant: the snapshot was staged in another database"
    );
    let SnapshotHeader {
        index,
        term,
        revision,
    } = staged.header;
    assert!(
        hard_state.commit >= index && hard_state.term >= term,
        "snapshot install invariant: hard state {hard_state:?} is behind snapshot {index}@{term}"
    );
    let db = &*kv.db;
    // Built before the switch, so that readers wait only for the write.
    let staged_position = KvPosition {
        cf: staged.cf,
        applied: index,
        revision,
        compacted: staged.compacted,
    };
    let (mut staged_hist, staged_keys) = HistIndex::load(db, staged_position)?;
    // The sender's view may hold records its deleter had not removed yet.
    drop_leftovers(&mut staged_hist, kv.deleter.handle());
    let mut batch = WriteBatch::default();
    log.replace_with_snapshot(&mut batch, index, term);
    batch.put_cf(
        db.cf(CF_META),
        META_HARD_STATE,
        encode_hard_state(&hard_state),
    );
    batch.put_cf(db.cf(CF_META), META_KV_CF, encode_kv_cf(staged.cf));
    batch.put_cf(
        db.cf(CF_META),
        META_KV_STATE,
        encode_kv_state(index, revision),
    );
    batch.put_cf(
        db.cf(CF_META),
        META_KV_COMPACTED,
        encode_revision(staged.compacted),
    );
    batch.delete_range_cf(db.cf(CF_META), META_LEASE_PREFIX, META_LEASE_END);
    for &(id, ttl) in &staged.leases {
        batch.put_cf(db.cf(CF_META), lease_key(id), encode_lease(ttl));
    }
    let staged_leases = LeaseTable::new(staged.leases, &staged_keys);
    {
        let mut hist = kv.hist.write();
        let mut leases = kv.leases.write();
        db.write(batch, log.syncs())?;
        *hist = staged_hist;
        *leases = staged_leases;
    }
    log.restored_snapshot(index, term, hard_state);
    let old = kv.cf;
    kv.cf = staged.cf;
    kv.applied = index;
    kv.revision = revision;
    kv.index = staged_keys;
    // The snapshot is in; what is left is tidying. A failure here is only
    // logged: the next transfer clears this column family anyway.
    for cf in [old, hist_cf(old)] {
        if let Err(e) = db.clear(cf) {
            tracing::warn!("cannot clear the column family {cf} after a snapshot install: {e}");
        }
    }
    Ok(())
}
