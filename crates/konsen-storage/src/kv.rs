//! [`KvStore`]: the key-value state machine with etcd's data model, and how
//! committed log entries are applied to it.
//!
//! The store has one revision counter. It starts at 1, like a fresh etcd,
//! and every request that changes something raises it by one: a put always
//! does, a delete only if it removed a key. Each key records the revision
//! that created it, the one that last modified it, and how many times it
//! was written since it was created (its version).
//!
//! A batch of committed entries is applied in one `WriteBatch` that also
//! records the new applied index and revision, so the state on disk is
//! always exactly "the log applied up to the applied index". The write is
//! not synced: the entries are in the synced log, and after a crash the
//! node applies them again from the recorded applied index.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use konsen_core::{Entry, EntryKind, Index};
use rocksdb::WriteBatch;

use crate::codec::{decode_kv, encode_kv, encode_kv_state};
use crate::command::Command;
use crate::db::{BATCH_RECORD_OVERHEAD, CF_META, Db, KvPosition, META_KV_STATE};
use crate::error::{RequestError, StorageError};
use crate::index::{KeyIndex, KeyMeta};
use crate::range::KeyRange;

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
}

impl KvStore {
    pub(crate) fn open(db: Arc<Db>) -> Result<KvStore, StorageError> {
        let KvPosition {
            cf,
            applied,
            revision,
        } = db.kv_position(None)?;
        if revision < REVISION_INITIAL {
            return Err(db.corruption(format!("the recorded revision {revision} is below 1")));
        }
        let index = KeyIndex::load(&db, cf)?;
        Ok(KvStore {
            db,
            cf,
            applied,
            revision,
            receiving: Arc::default(),
            index,
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
        let mut pending = Pending::new(&self.db, self.cf, &self.index, self.revision);
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
        let mut batch = pending.batch();
        batch.put_cf(
            self.db.cf(CF_META),
            META_KV_STATE,
            encode_kv_state(applied, revision),
        );
        self.db.write(batch, false)?;
        let written = pending.written;
        self.index.update(&written);
        self.applied = applied;
        self.revision = revision;
        Ok(results)
    }

    /// Reads one key at the current revision.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        get_stored(&self.db, self.cf, key)
    }
}

/// Reads `key` from disk.
fn get_stored(db: &Db, cf: &str, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
    match db.get(cf, key)? {
        Some(bytes) => decode_kv(key, &bytes, false)
            .map(Some)
            .map_err(|e| db.undecodable("key-value record", e)),
        None => Ok(None),
    }
}

/// The changes of a batch being applied: what it wrote so far (later
/// entries of the same batch must see it) and the revision it reached.
struct Pending<'a> {
    db: &'a Db,
    cf: &'static str,
    index: &'a KeyIndex,
    revision: i64,
    /// Key → its new state (`None`: deleted) for every key written.
    written: BTreeMap<Vec<u8>, Option<KeyValue>>,
}

impl<'a> Pending<'a> {
    fn new(db: &'a Db, cf: &'static str, index: &'a KeyIndex, revision: i64) -> Self {
        Pending {
            db,
            cf,
            index,
            revision,
            written: BTreeMap::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        match self.written.get(key) {
            Some(state) => Ok(state.clone()),
            None => get_stored(self.db, self.cf, key),
        }
    }

    /// [`Pending::get`] without the value, from memory.
    fn meta(&self, key: &[u8]) -> Option<KeyMeta> {
        match self.written.get(key) {
            Some(state) => state.as_ref().map(KeyMeta::of),
            None => self.index.get(key),
        }
    }

    /// The keys in `range` as of this point in the batch, sorted.
    fn scan(&self, range: &KeyRange) -> Result<Vec<KeyValue>, StorageError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let mut found: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
        crate::range::scan_stored(self.db, self.cf, range, |kv| {
            found.insert(kv.key.clone(), kv);
            true
        })?;
        for (key, state) in self.written.range::<[u8], _>(range.bounds()) {
            match state {
                Some(kv) => found.insert(key.clone(), kv.clone()),
                None => found.remove(key),
            };
        }
        Ok(found.into_values().collect())
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
                // The whole previous record only when its value is needed.
                let (prev, meta) = if prev_kv || ignore_value {
                    let prev = self.get(&key)?;
                    let meta = prev.as_ref().map(KeyMeta::of);
                    (prev, meta)
                } else {
                    (None, self.meta(&key))
                };
                let (value, lease) = match (meta, ignore_value, ignore_lease) {
                    (None, true, _) | (None, _, true) => {
                        return Ok(ApplyOutcome::Rejected(RequestError::KeyNotFound));
                    }
                    (Some(m), _, _) => (
                        match (&prev, ignore_value) {
                            (Some(p), true) => p.value.clone(),
                            _ => value,
                        },
                        if ignore_lease { m.lease } else { lease },
                    ),
                    (None, false, false) => (value, lease),
                };
                self.revision += 1;
                let kv = KeyValue {
                    create_revision: meta.map_or(self.revision, |m| m.create_revision),
                    mod_revision: self.revision,
                    version: meta.map_or(1, |m| m.version + 1),
                    key: key.clone(),
                    value,
                    lease,
                };
                self.written.insert(key, Some(kv));
                Ok(ApplyOutcome::Put(PutResult {
                    revision: self.revision,
                    prev_kv: if prev_kv { prev } else { None },
                }))
            }
            Command::DeleteRange {
                key,
                range_end,
                prev_kv,
            } => {
                if key.is_empty() {
                    return Ok(ApplyOutcome::Rejected(RequestError::EmptyKey));
                }
                let doomed = self.scan(&KeyRange::new(key, range_end))?;
                if !doomed.is_empty() {
                    self.revision += 1;
                }
                for kv in &doomed {
                    self.written.insert(kv.key.clone(), None);
                }
                Ok(ApplyOutcome::DeleteRange(DeleteRangeResult {
                    revision: self.revision,
                    deleted: doomed.len() as i64,
                    prev_kvs: if prev_kv { doomed } else { Vec::new() },
                }))
            }
        }
    }

    fn batch(&self) -> WriteBatch {
        let bytes: usize = self
            .written
            .iter()
            .map(|(key, state)| {
                key.len() + state.as_ref().map_or(0, |kv| kv.value.len()) + BATCH_RECORD_OVERHEAD
            })
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes + BATCH_RECORD_OVERHEAD);
        let cf = self.db.cf(self.cf);
        for (key, state) in &self.written {
            match state {
                Some(kv) => batch.put_cf(cf, key, encode_kv(kv)),
                None => batch.delete_cf(cf, key),
            }
        }
        batch
    }
}
