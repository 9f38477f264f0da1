//! [`KvStore`]: the key-value state machine with etcd's data model, and how
//! committed log entries are applied to it.
//!
//! The store has one revision counter. It starts at 1, like a fresh etcd,
//! and every request that changes something raises it by one: a put always
//! does, a delete only if it removed a key, a txn once if it changed
//! anything. Each key records the revision that created it, the one that
//! last modified it, and how many times it was written since it was
//! created (its version). Every version since the compacted revision is
//! kept in the history (`history.rs`), the only copy of the state: reads
//! at the current revision read each key's latest version.
//!
//! A batch of committed entries is applied in one `WriteBatch` that also
//! records the new applied index and revision, so the state on disk is
//! always exactly "the log applied up to the applied index". The write is
//! not synced: the entries are in the synced log, and after a crash the
//! node applies them again from the recorded applied index.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use konsen_core::{Entry, EntryKind, Index};
use rocksdb::WriteBatch;

use crate::codec::{encode_kv, encode_kv_state, encode_revision};
use crate::command::{Command, check_lease_grant};
use crate::db::{
    BATCH_RECORD_OVERHEAD, CF_META, Db, HIST_LAYOUT_HISTORY_ONLY, HIST_LAYOUT_REVISION_FIRST,
    KvPosition, META_HIST_LAYOUT, META_KV_COMPACTED, META_KV_STATE, hist_cf, other_kv_cf,
};
use crate::deleter::{Deleter, DeleterHandle};
use crate::error::{RequestError, StorageError};
use crate::history::{
    CompactionDeletes, HistIndex, Version, history_key, parse_key_first_history_key, range_at,
    read_version,
};
use crate::index::{KeyIndex, KeyMeta};
use crate::lease::{LeaseTable, SharedLeases, encode_lease, lease_key, read_leases};
use crate::range::{KeyRange, scan_stored};
use crate::shared::Shared;
use crate::txn::{TxnOp, TxnPath, TxnResponse, TxnResult, TxnState, branch, check_path, txn_range};

/// The revision of a store to which nothing was written yet (etcd's too).
pub const REVISION_INITIAL: i64 = 1;

/// A key's current state, as etcd's `mvccpb.KeyValue` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Empty when read with `keys_only`.
    pub value: Bytes,
    /// The revision of the put that created the key (since its last delete).
    pub create_revision: i64,
    /// The revision of the last put to the key.
    pub mod_revision: i64,
    /// Puts since the key was created: 1 after the first.
    pub version: i64,
    /// The lease the key is attached to; 0 for none.
    pub lease: i64,
}

/// What applying one log entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyResult {
    /// The entry's log index, to match the result with its proposal.
    pub index: Index,
    pub outcome: ApplyOutcome,
}

/// The effect of one entry on the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The entry carried no command (a leader's no-op, a membership change).
    Empty,
    Put(PutResult),
    DeleteRange(DeleteRangeResult),
    Txn(TxnResult),
    Compact(CompactResult),
    LeaseGrant(LeaseGrantResult),
    LeaseRevoke(LeaseRevokeResult),
    /// The command was refused, alike on every replica, and changed
    /// nothing. A payload that does not decode ends up here too.
    Rejected(RequestError),
}

/// What etcd's `PutResponse` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The revision the put created.
    pub revision: i64,
    /// The key's state before the put, if asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// What etcd's `CompactionResponse` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactResult {
    /// The current revision (a compaction does not change it).
    pub revision: i64,
}

/// What etcd's `LeaseGrantResponse` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrantResult {
    pub id: i64,
    /// The granted TTL, in seconds.
    pub ttl: i64,
    /// The current revision (a grant does not change it).
    pub revision: i64,
}

/// What etcd's `LeaseRevokeResponse` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRevokeResult {
    pub id: i64,
    /// The revision after the revoke: a new one if it deleted keys.
    pub revision: i64,
    /// How many keys it deleted.
    pub deleted: i64,
}

/// What etcd's `DeleteRangeResponse` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRangeResult {
    /// The revision after the delete: a new one if a key was deleted, the
    /// unchanged current one otherwise.
    pub revision: i64,
    pub deleted: i64,
    /// The deleted keys' last states, sorted by key, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// The key-value state machine. Obtained from [`crate::RocksStore`].
#[derive(Debug)]
pub struct KvStore {
    pub(crate) db: Arc<Db>,
    /// The column family holding the state (see `db.rs`).
    pub(crate) cf: &'static str,
    pub(crate) applied: Index,
    pub(crate) revision: i64,
    /// Set while a snapshot is being received (one at a time).
    pub(crate) receiving: Arc<std::sync::atomic::AtomicBool>,
    /// What puts need of the live keys' records, in memory.
    pub(crate) index: KeyIndex,
    /// Deletes the records that compactions dropped, beside the loop.
    pub(crate) deleter: Deleter,
    /// Which versions the history holds, and the compacted revision (reads
    /// below it are refused), shared with the readers. A batch is written
    /// and taken in under its write lock, so a reader that takes a view of
    /// the database under its read lock sees the two agree.
    pub(crate) hist: SharedHistIndex,
    /// The change feed, once turned on: the versions applied batches
    /// wrote, until [`KvStore::take_changes`] takes them.
    pub(crate) feed: Option<Vec<Version>>,
    /// The leases and their keys, shared with the readers.
    pub(crate) leases: SharedLeases,
}

/// The history index shared by the store and its readers.
pub(crate) type SharedHistIndex = Shared<HistIndex>;

impl SharedHistIndex {
    /// A view of the database, its position, and what `pick` takes from
    /// the index about it, all under the read lock: the index then
    /// describes the view exactly, and the versions `pick` names can be
    /// read from the view after the lock is released (a compaction since
    /// cannot remove them from it).
    pub(crate) fn view<'d, T>(
        &self,
        db: &'d Db,
        pick: impl FnOnce(&HistIndex, &KvPosition) -> T,
    ) -> (rocksdb::Snapshot<'d>, KvPosition, T) {
        let index = self.read();
        let view = db.snapshot();
        let position = index.position();
        let picked = pick(&index, &position);
        (view, position, picked)
    }
}

impl KvStore {
    pub(crate) fn open(db: Arc<Db>) -> Result<KvStore, StorageError> {
        if needs_history(&db)? {
            migrate_to_history(&db)?;
        }
        ensure_revision_first(&db)?;
        ensure_history_only(&db)?;
        let position = db.kv_position(None)?;
        let KvPosition {
            cf,
            applied,
            revision,
            compacted,
        } = position;
        if revision < REVISION_INITIAL {
            return Err(db.corruption(format!("the recorded revision {revision} is below 1")));
        }
        if compacted > revision {
            return Err(db.corruption(format!(
                "the compacted revision {compacted} is above the revision {revision}"
            )));
        }
        let (mut hist, index) = HistIndex::load(&db, position)?;
        let deleter = Deleter::start(Arc::clone(&db));
        drop_leftovers(&mut hist, deleter.handle());
        let hist = SharedHistIndex::new(hist);
        let leases = SharedLeases::new(LeaseTable::new(read_leases(&db, None)?, &index));
        Ok(KvStore {
            leases,
            deleter,
            db,
            cf,
            applied,
            revision,
            receiving: Arc::default(),
            index,
            hist,
            feed: None,
        })
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// The index of the last applied entry (0 before the first).
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The current revision (1 before the first change).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The compacted revision: reads below it are refused (0 before the
    /// first compaction).
    pub fn compacted_revision(&self) -> i64 {
        self.hist.read().compacted()
    }

    /// The approximate size of the whole database on disk and in memory
    /// (log included), in bytes, for status reports.
    pub fn data_size_bytes(&self) -> Result<u64, StorageError> {
        self.db.size_bytes()
    }

    /// Applies committed `entries` in order and returns one result per
    /// entry applied. Entries at or below the applied index are skipped, so
    /// a batch handed out again after a restart is applied once. The batch's
    /// effects, the new applied index and revision are written atomically.
    ///
    /// An `Err` means the store could not read or write (or the entries
    /// skip an index); nothing of the batch was applied.
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Vec<ApplyResult>, StorageError> {
        let hist = self.hist.read();
        let leases = self.leases.read();
        let mut pending = Pending::new(
            &self.db,
            self.cf,
            &self.index,
            &hist,
            &leases,
            self.revision,
            hist.compacted(),
        );
        let mut applied = self.applied;
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.index <= applied {
                continue;
            }
            if entry.index != applied + 1 {
                return Err(StorageError::ApplyGap {
                    applied,
                    index: entry.index,
                });
            }
            let outcome = match entry.kind {
                EntryKind::Membership => ApplyOutcome::Empty,
                EntryKind::Normal if entry.data.is_empty() => ApplyOutcome::Empty,
                EntryKind::Normal => match Command::decode(&entry.data) {
                    Ok(command) => pending.execute(command)?,
                    Err(e) => ApplyOutcome::Rejected(RequestError::Decode(e)),
                },
            };
            applied = entry.index;
            results.push(ApplyResult {
                index: entry.index,
                outcome,
            });
        }
        if applied == self.applied {
            return Ok(results);
        }
        let revision = pending.revision;
        let (mut batch, compaction) = pending.batch()?;
        batch.put_cf(
            self.db.cf(CF_META),
            META_KV_STATE,
            encode_kv_state(applied, revision),
        );
        let Pending {
            history, lease_ops, ..
        } = pending;
        drop(hist);
        drop(leases);
        {
            let mut hist = self.hist.write();
            self.db.write(batch, false)?;
            hist.update(&history, compaction.as_ref(), applied, revision);
        }
        if let Some(compaction) = compaction {
            self.deleter
                .handle()
                .delete(hist_cf(self.cf), compaction.keys().collect());
        }
        let moved = self.index.update(&history);
        if !moved.is_empty() || !lease_ops.is_empty() {
            let mut leases = self.leases.write();
            for (key, old, new) in &moved {
                leases.attach(key, *old, *new);
            }
            for (id, ttl) in lease_ops {
                leases.set(id, ttl);
            }
        }
        if let Some(feed) = &mut self.feed {
            // A txn's changes in key order, as the history holds them, so
            // that the feed and a read of the history agree.
            let start = feed.len();
            feed.extend(history);
            feed[start..].sort_by(|a, b| (a.revision, &a.key).cmp(&(b.revision, &b.key)));
        }
        self.applied = applied;
        self.revision = revision;
        Ok(results)
    }

    /// Turns the change feed on: from now on every applied change is kept
    /// until [`KvStore::take_changes`] takes it. Off by default, so that a
    /// store nobody takes changes from does not grow.
    pub fn feed_changes(&mut self) {
        self.feed.get_or_insert_with(Vec::new);
    }

    /// Turns the change feed off and drops what it held (nobody follows
    /// it any more).
    pub fn stop_changes(&mut self) {
        self.feed = None;
    }

    /// The changes applied since the last call, in revision order (a txn's
    /// changes share one revision, in key order), each readable
    /// by the store's readers already. Empty while the feed is off. A
    /// snapshot install is no change: whoever follows the feed must read
    /// what it missed with [`KvReader::changes`].
    pub fn take_changes(&mut self) -> Vec<Version> {
        self.feed.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Every lease and its granted TTL, by id.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.leases.read().leases()
    }

    /// Reads one key at the current revision.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        get_latest(&self.db, &self.hist.read(), hist_cf(self.cf), key)
    }
}

/// Whether the data dir was written before history was kept, and not yet
/// migrated: no compacted revision recorded (a migration, a compaction and
/// a snapshot install record one), an empty history, and yet a state (a
/// live key, or a revision above the first). A dir of this version with a
/// state has a history: every write adds to it, and compaction keeps the
/// live keys' versions. Checked on every open, so a first open that fails
/// after creating the history column families does not skip it.
fn needs_history(db: &Db) -> Result<bool, StorageError> {
    if db.get(CF_META, META_KV_COMPACTED)?.is_some() {
        return Ok(false);
    }
    let position = db.kv_position(None)?;
    let is_empty = |cf: &str| -> Result<bool, StorageError> {
        let mut it = db.iter(cf, &[], None);
        it.seek_to_first();
        let empty = !it.valid();
        it.status().map_err(|e| db.error(e))?;
        Ok(empty)
    };
    if !is_empty(hist_cf(position.cf))? {
        return Ok(false);
    }
    Ok(position.revision > REVISION_INITIAL || !is_empty(position.cf)?)
}

/// Gives a data dir from before history was kept its history: every
/// key's current record, at its mod revision, and the compacted revision
/// set to the current one (older versions were never kept).
fn migrate_to_history(db: &Db) -> Result<(), StorageError> {
    let position = db.kv_position(None)?;
    let hist = hist_cf(position.cf);
    let mut batch = WriteBatch::default();
    let mut keys = 0u64;
    scan_stored(db, position.cf, &KeyRange::new(vec![0], vec![0]), |kv| {
        batch.put_cf(
            db.cf(hist),
            history_key(&kv.key, kv.mod_revision),
            encode_kv(&kv),
        );
        keys += 1;
        true
    })?;
    batch.put_cf(
        db.cf(CF_META),
        META_KV_COMPACTED,
        encode_revision(position.revision),
    );
    batch.put_cf(db.cf(CF_META), META_HIST_LAYOUT, HIST_LAYOUT_REVISION_FIRST);
    db.write(batch, true)?;
    tracing::info!(
        "data dir {}: history started at revision {} ({keys} keys); older revisions read as compacted",
        db.path().display(),
        position.revision
    );
    Ok(())
}

/// Makes sure the history is keyed revision first (`history.rs`): records
/// the layout in a dir whose history is empty, and rewrites the history of
/// a dir written by the builds that keyed it by user key first, in one
/// synced batch (all of it held in memory meanwhile; auto-compaction kept
/// those histories to a few retentions).
fn ensure_revision_first(db: &Db) -> Result<(), StorageError> {
    match db.get(CF_META, META_HIST_LAYOUT)? {
        Some(layout)
            if layout == HIST_LAYOUT_REVISION_FIRST || layout == HIST_LAYOUT_HISTORY_ONLY =>
        {
            return Ok(());
        }
        Some(layout) => {
            return Err(db.corruption(format!(
                "unknown history layout {layout:?} (this build writes {HIST_LAYOUT_HISTORY_ONLY:?})"
            )));
        }
        None => {}
    }
    let hist = hist_cf(db.kv_position(None)?.cf);
    let mut records = Vec::new();
    let mut it = db.iter(hist, &[], None);
    it.seek_to_first();
    while let Some((raw, value)) = it.item() {
        let (key, revision) = parse_key_first_history_key(raw)
            .map_err(|e| db.undecodable("key-first history key", e))?;
        records.push((raw.to_vec(), history_key(&key, revision), value.to_vec()));
        it.next();
    }
    it.status().map_err(|e| db.error(e))?;
    drop(it);
    // Every old key goes before any new one is written: the two layouts'
    // keys may coincide.
    let mut batch = WriteBatch::default();
    for (old, _, _) in &records {
        batch.delete_cf(db.cf(hist), old);
    }
    for (_, new, value) in &records {
        batch.put_cf(db.cf(hist), new, value);
    }
    batch.put_cf(db.cf(CF_META), META_HIST_LAYOUT, HIST_LAYOUT_REVISION_FIRST);
    db.write(batch, true)?;
    if !records.is_empty() {
        tracing::info!(
            "data dir {}: history of {} versions rewritten revision first",
            db.path().display(),
            records.len()
        );
    }
    Ok(())
}

/// Makes the history the only copy of the state, in a dir written by the
/// builds that also kept each key's current record in the key-value column
/// family: checks that the history holds every such record, and nothing
/// else live, as its keys' latest versions; then clears the column family
/// and records the layout (synced). A difference is corruption: the dir is
/// refused, and nothing is changed.
fn ensure_history_only(db: &Db) -> Result<(), StorageError> {
    if db.get(CF_META, META_HIST_LAYOUT)?.as_deref() == Some(HIST_LAYOUT_HISTORY_ONLY) {
        return Ok(());
    }
    let position = db.kv_position(None)?;
    let hist = hist_cf(position.cf);
    let (index, live) = HistIndex::load(db, position)?;
    let mut keys = 0usize;
    let mut differs: Option<String> = None;
    scan_stored(db, position.cf, &KeyRange::new(vec![0], vec![0]), |kv| {
        let found = match index.latest(&kv.key) {
            Some(revision) => read_version(db, None, hist, &kv.key, revision, false).map(Some),
            None => Ok(None),
        };
        match found {
            Ok(Some(latest)) if latest == kv => {
                keys += 1;
                true
            }
            Ok(found) => {
                differs = Some(format!(
                    "key {:?}: current record {kv:?}, latest version in the history {found:?}",
                    kv.key
                ));
                false
            }
            Err(e) => {
                differs = Some(format!("key {:?}: {e}", kv.key));
                false
            }
        }
    })?;
    if differs.is_none() && keys != live.len() {
        differs = Some(format!(
            "{keys} current records, {} live keys in the history",
            live.len()
        ));
    }
    if let Some(differs) = differs {
        return Err(db.corruption(format!(
            "the history does not hold the current state, so it cannot become its only copy: {differs}"
        )));
    }
    // The idle one may hold an abandoned snapshot transfer.
    db.clear(position.cf)?;
    db.clear(other_kv_cf(position.cf))?;
    let mut batch = WriteBatch::default();
    batch.put_cf(db.cf(CF_META), META_HIST_LAYOUT, HIST_LAYOUT_HISTORY_ONLY);
    db.write(batch, true)?;
    if keys > 0 {
        tracing::info!(
            "data dir {}: the history is now the only copy of the state ({keys} keys checked)",
            db.path().display()
        );
    }
    Ok(())
}

/// Takes out of `index` the versions below its compacted revision that the
/// compaction rule drops, and hands their records to the deleter: what a
/// crash or a snapshot's sender left before the deleter removed it.
pub(crate) fn drop_leftovers(index: &mut HistIndex, deleter: &DeleterHandle) {
    let position = index.position();
    if position.compacted == 0 {
        return;
    }
    let leftovers = index.compaction(position.compacted, &[]);
    let keys: Vec<Vec<u8>> = leftovers.keys().collect();
    if keys.is_empty() {
        return;
    }
    tracing::info!(
        "{} history records below the compacted revision {} are left to delete",
        keys.len(),
        position.compacted
    );
    index.update(&[], Some(&leftovers), position.applied, position.revision);
    deleter.delete(hist_cf(position.cf), keys);
}

/// Reads `key`'s latest version from the history column family `cf`,
/// which `index` describes.
fn get_latest(
    db: &Db,
    index: &HistIndex,
    cf: &str,
    key: &[u8],
) -> Result<Option<KeyValue>, StorageError> {
    index
        .latest(key)
        .map(|revision| read_version(db, None, cf, key, revision, false))
        .transpose()
}

/// The changes of a batch being applied: what it wrote so far (later
/// entries of the same batch must see it) and the revision it reached.
struct Pending<'a> {
    db: &'a Db,
    cf: &'static str,
    index: &'a KeyIndex,
    hist: &'a HistIndex,
    leases: &'a LeaseTable,
    revision: i64,
    compacted: i64,
    /// The leases granted (`Some(ttl)`) and revoked (`None`) in this
    /// batch, the last of each id.
    lease_ops: BTreeMap<i64, Option<i64>>,
    /// Key → where in `history` its latest version of the batch is, for
    /// every key written.
    written: BTreeMap<Vec<u8>, usize>,
    /// Every version written, in order, for the history.
    history: Vec<Version>,
    /// A compaction applied in this batch (the highest).
    compact_to: Option<i64>,
}

impl TxnState for Pending<'_> {
    fn revision(&self) -> i64 {
        self.revision
    }

    fn compacted(&self) -> i64 {
        self.compacted
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        Pending::get(self, key)
    }

    fn scan(&self, range: &KeyRange) -> Result<Vec<KeyValue>, StorageError> {
        Pending::scan(self, range)
    }

    fn scan_at(&self, range: &KeyRange, revision: i64) -> Result<Vec<KeyValue>, StorageError> {
        range_at(
            self.db,
            self.hist,
            None,
            hist_cf(self.cf),
            range,
            revision,
            &self.history,
        )
    }

    fn lease_exists(&self, id: i64) -> bool {
        Pending::lease_exists(self, id)
    }
}

impl<'a> Pending<'a> {
    fn new(
        db: &'a Db,
        cf: &'static str,
        index: &'a KeyIndex,
        hist: &'a HistIndex,
        leases: &'a LeaseTable,
        revision: i64,
        compacted: i64,
    ) -> Self {
        Pending {
            db,
            cf,
            index,
            hist,
            leases,
            revision,
            compacted,
            lease_ops: BTreeMap::new(),
            written: BTreeMap::new(),
            history: Vec::new(),
            compact_to: None,
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        match self.written.get(key) {
            Some(&at) => Ok(self.history[at].state.clone()),
            None => get_latest(self.db, self.hist, hist_cf(self.cf), key),
        }
    }

    /// [`Pending::get`] without the value, from memory.
    fn meta(&self, key: &[u8]) -> Option<KeyMeta> {
        match self.written.get(key) {
            Some(&at) => self.history[at].state.as_ref().map(KeyMeta::of),
            None => self.index.get(key),
        }
    }

    /// Whether lease `id` exists at this point in the batch.
    fn lease_exists(&self, id: i64) -> bool {
        match self.lease_ops.get(&id) {
            Some(ttl) => ttl.is_some(),
            None => self.leases.contains(id),
        }
    }

    /// The keys attached to lease `id` at this point in the batch, sorted.
    fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        // The table's keys as of the batch's start, and the keys the batch
        // wrote, each kept if its state now names the lease.
        let keys: BTreeSet<&Vec<u8>> = self
            .leases
            .key_refs(id)
            .chain(self.written.keys())
            .collect();
        keys.into_iter()
            .filter(|key| self.meta(key).is_some_and(|m| m.lease == id))
            .cloned()
            .collect()
    }

    /// The keys in `range` as of this point in the batch, sorted.
    fn scan(&self, range: &KeyRange) -> Result<Vec<KeyValue>, StorageError> {
        self.scan_at(range, self.revision)
    }

    fn execute(&mut self, command: Command) -> Result<ApplyOutcome, StorageError> {
        match command {
            Command::Put {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            } => {
                if key.is_empty() {
                    return Ok(ApplyOutcome::Rejected(RequestError::EmptyKey));
                }
                let revision = self.revision + 1;
                Ok(
                    match self.put_at(
                        revision,
                        key,
                        value,
                        lease,
                        prev_kv,
                        ignore_value,
                        ignore_lease,
                    )? {
                        Ok(put) => ApplyOutcome::Put(put),
                        Err(e) => ApplyOutcome::Rejected(e),
                    },
                )
            }
            Command::DeleteRange {
                key,
                range_end,
                prev_kv,
            } => {
                if key.is_empty() {
                    return Ok(ApplyOutcome::Rejected(RequestError::EmptyKey));
                }
                let revision = self.revision + 1;
                Ok(ApplyOutcome::DeleteRange(
                    self.delete_at(revision, key, range_end, prev_kv)?,
                ))
            }
            Command::Txn(txn) => {
                // The proposer checked it; a log entry is applied alike on
                // every replica whatever it holds, so check again.
                if let Err(e) = txn.check_duplicates() {
                    return Ok(ApplyOutcome::Rejected(e));
                }
                let path = TxnPath::decide(self, &txn)?;
                if let Err(e) = check_path(self, &txn, &path)? {
                    return Ok(ApplyOutcome::Rejected(e));
                }
                let revision = self.revision + 1;
                Ok(ApplyOutcome::Txn(self.run_txn(&txn, &path, revision)?))
            }
            Command::Compact { revision } => {
                if revision <= self.compacted {
                    return Ok(ApplyOutcome::Rejected(RequestError::Compacted {
                        requested: revision,
                        compacted: self.compacted,
                    }));
                }
                if revision > self.revision {
                    return Ok(ApplyOutcome::Rejected(RequestError::FutureRevision {
                        requested: revision,
                        current: self.revision,
                    }));
                }
                self.compacted = revision;
                self.compact_to = Some(revision);
                Ok(ApplyOutcome::Compact(CompactResult {
                    revision: self.revision,
                }))
            }
            Command::LeaseGrant { id, ttl } => {
                if let Err(e) = check_lease_grant(id, ttl) {
                    return Ok(ApplyOutcome::Rejected(e));
                }
                if self.lease_exists(id) {
                    return Ok(ApplyOutcome::Rejected(RequestError::LeaseExists));
                }
                self.lease_ops.insert(id, Some(ttl));
                Ok(ApplyOutcome::LeaseGrant(LeaseGrantResult {
                    id,
                    ttl,
                    revision: self.revision,
                }))
            }
            Command::LeaseRevoke { id } => {
                if !self.lease_exists(id) {
                    return Ok(ApplyOutcome::Rejected(RequestError::LeaseNotFound));
                }
                let keys = self.lease_keys(id);
                let revision = self.revision + 1;
                if !keys.is_empty() {
                    self.revision = revision;
                }
                for key in &keys {
                    self.written.insert(key.clone(), self.history.len());
                    self.history.push(Version {
                        key: key.clone(),
                        revision,
                        state: None,
                    });
                }
                self.lease_ops.insert(id, None);
                Ok(ApplyOutcome::LeaseRevoke(LeaseRevokeResult {
                    id,
                    revision: self.revision,
                    deleted: keys.len() as i64,
                }))
            }
        }
    }

    /// Runs the operations of `txn`'s path, every write at `revision`.
    fn run_txn(
        &mut self,
        txn: &crate::txn::Txn,
        path: &TxnPath,
        revision: i64,
    ) -> Result<TxnResult, StorageError> {
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for op in branch(txn, path.succeeded) {
            responses.push(match op {
                TxnOp::Range(r) => TxnResponse::Range(txn_range(self, r)?),
                TxnOp::Put {
                    key,
                    value,
                    lease,
                    prev_kv,
                    ignore_value,
                    ignore_lease,
                } => {
                    let put = self.put_at(
                        revision,
                        key.clone(),
                        value.clone(),
                        *lease,
                        *prev_kv,
                        *ignore_value,
                        *ignore_lease,
                    )?;
                    TxnResponse::Put(
                        put.expect("txn invariant: check_path let no failing put through"),
                    )
                }
                TxnOp::DeleteRange {
                    key,
                    range_end,
                    prev_kv,
                } => TxnResponse::DeleteRange(self.delete_at(
                    revision,
                    key.clone(),
                    range_end.clone(),
                    *prev_kv,
                )?),
                TxnOp::Txn(t) => {
                    let p = nested
                        .next()
                        .expect("txn path invariant: one path per nested txn");
                    TxnResponse::Txn(self.run_txn(t, p, revision)?)
                }
            });
        }
        Ok(TxnResult {
            revision: self.revision,
            succeeded: path.succeeded,
            responses,
        })
    }

    /// Puts `key` at `revision` (the store's revision becomes it).
    #[allow(clippy::too_many_arguments)]
    fn put_at(
        &mut self,
        revision: i64,
        key: Vec<u8>,
        value: Bytes,
        lease: i64,
        prev_kv: bool,
        ignore_value: bool,
        ignore_lease: bool,
    ) -> Result<Result<PutResult, RequestError>, StorageError> {
        // The whole previous record only when its value is needed.
        let (prev, meta) = if prev_kv || ignore_value {
            let prev = self.get(&key)?;
            let meta = prev.as_ref().map(KeyMeta::of);
            (prev, meta)
        } else {
            (None, self.meta(&key))
        };
        let (value, lease) = match (meta, ignore_value, ignore_lease) {
            (None, true, _) | (None, _, true) => return Ok(Err(RequestError::KeyNotFound)),
            (Some(m), _, _) => (
                match (&prev, ignore_value) {
                    (Some(p), true) => p.value.clone(),
                    _ => value,
                },
                if ignore_lease { m.lease } else { lease },
            ),
            (None, false, false) => (value, lease),
        };
        // After the missing-key refusal, as the txn checks order them.
        if lease != 0 && !ignore_lease && !self.lease_exists(lease) {
            return Ok(Err(RequestError::LeaseNotFound));
        }
        self.revision = revision;
        let kv = KeyValue {
            create_revision: meta.map_or(revision, |m| m.create_revision),
            mod_revision: revision,
            version: meta.map_or(1, |m| m.version + 1),
            key: key.clone(),
            value,
            lease,
        };
        self.written.insert(key, self.history.len());
        self.history.push(Version {
            key: kv.key.clone(),
            revision,
            state: Some(kv),
        });
        Ok(Ok(PutResult {
            revision,
            prev_kv: if prev_kv { prev } else { None },
        }))
    }

    /// Deletes the keys in `[key, range_end)` at `revision` (the store's
    /// revision becomes it if any key was deleted).
    fn delete_at(
        &mut self,
        revision: i64,
        key: Vec<u8>,
        range_end: Vec<u8>,
        prev_kv: bool,
    ) -> Result<DeleteRangeResult, StorageError> {
        let doomed = self.scan(&KeyRange::new(key, range_end))?;
        if !doomed.is_empty() {
            self.revision = revision;
        }
        for kv in &doomed {
            self.written.insert(kv.key.clone(), self.history.len());
            self.history.push(Version {
                key: kv.key.clone(),
                revision,
                state: None,
            });
        }
        Ok(DeleteRangeResult {
            revision: self.revision,
            deleted: doomed.len() as i64,
            prev_kvs: if prev_kv { doomed } else { Vec::new() },
        })
    }

    /// The batch that writes everything: the history, and a compaction's
    /// compacted revision, with the versions it drops (returned, for the
    /// history index and the deleter).
    fn batch(&self) -> Result<(WriteBatch, Option<CompactionDeletes>), StorageError> {
        let bytes: usize = self
            .history
            .iter()
            .map(|v| {
                v.key.len()
                    + v.state.as_ref().map_or(0, |kv| kv.value.len())
                    + BATCH_RECORD_OVERHEAD
            })
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes + BATCH_RECORD_OVERHEAD);
        let hist = self.db.cf(hist_cf(self.cf));
        for v in &self.history {
            let record = v.state.as_ref().map(encode_kv).unwrap_or_default();
            batch.put_cf(hist, history_key(&v.key, v.revision), &record);
        }
        // The records a compaction drops are deleted beside the loop
        // (`deleter.rs`), once the index no longer names them.
        let meta = self.db.cf(CF_META);
        for (&id, ttl) in &self.lease_ops {
            match ttl {
                Some(ttl) => batch.put_cf(meta, lease_key(id), encode_lease(*ttl)),
                None => batch.delete_cf(meta, lease_key(id)),
            }
        }
        let compaction = self.compact_to.map(|revision| {
            let deletes = self.hist.compaction(revision, &self.history);
            batch.put_cf(
                self.db.cf(CF_META),
                META_KV_COMPACTED,
                encode_revision(revision),
            );
            deletes
        });
        Ok((batch, compaction))
    }
}
