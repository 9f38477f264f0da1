//! [`KeyIndex`]: what applying a put needs to know about a key's current
//! record (its create revision, version and lease), kept in memory.
//!
//! Without it, every put first reads the key's record from RocksDB, and
//! that search through the memtable's skip list was the largest single item
//! of a node's CPU profile under writes (docs/performance.md, item 4).
//! It is derived state: built by scanning the live key-value column
//! family when the store opens or installs a snapshot, and updated after
//! each applied batch is written. Like etcd's in-memory key index, it grows
//! with the number of keys (about 40 bytes plus the key per key).

use std::collections::{BTreeMap, HashMap};

use crate::db::Db;
use crate::error::StorageError;
use crate::kv::KeyValue;
use crate::range::{KeyRange, scan_stored};

/// The part of a key's record a put depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyMeta {
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl KeyMeta {
    pub(crate) fn of(kv: &KeyValue) -> KeyMeta {
        KeyMeta {
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// Every live key's [`KeyMeta`].
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    keys: HashMap<Box<[u8]>, KeyMeta>,
}

impl KeyIndex {
    /// Reads every record of the key-value column family `cf`.
    pub(crate) fn load(db: &Db, cf: &str) -> Result<KeyIndex, StorageError> {
        let mut keys = HashMap::new();
        scan_stored(db, cf, &KeyRange::new(vec![0], vec![0]), |kv| {
            keys.insert(kv.key.clone().into_boxed_slice(), KeyMeta::of(&kv));
            true
        })?;
        Ok(KeyIndex { keys })
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<KeyMeta> {
        self.keys.get(key).copied()
    }

    /// Takes in the new states of a batch that was written (`None`:
    /// deleted).
    pub(crate) fn update(&mut self, written: &BTreeMap<Vec<u8>, Option<KeyValue>>) {
        for (key, state) in written {
            match (state, self.keys.get_mut(key.as_slice())) {
                // An existing key: no new allocation for it.
                (Some(kv), Some(meta)) => *meta = KeyMeta::of(kv),
                (Some(kv), None) => {
                    self.keys
                        .insert(key.clone().into_boxed_slice(), KeyMeta::of(kv));
                }
                (None, _) => {
                    self.keys.remove(key.as_slice());
                }
            }
        }
    }
}
