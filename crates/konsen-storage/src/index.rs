//! [`KeyIndex`]: what applying a put needs to know about a key's current
//! record (its create revision, version and lease), kept in memory.
//!
//! Without it, every put first reads the key's record from RocksDB, and
//! that search through the memtable's skip list was the largest single item
//! of a node's CPU profile under writes (docs/performance.md, item 4).
//! It is derived state: built with the history index, in the same scan of
//! the history column family (`HistIndex::load`), when the store opens or
//! installs a snapshot, and updated after each applied batch is written.
//! Like etcd's in-memory key index, it grows with the number of keys
//! (about 40 bytes plus the key per key).

use std::collections::HashMap;

use crate::history::Version;

use crate::kv::KeyValue;

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
    /// Records `key`'s latest state (`None`: deleted); returns the lease
    /// its previous state named (0: none, or no previous state).
    pub(crate) fn set(&mut self, key: &[u8], meta: Option<KeyMeta>) -> i64 {
        match (meta, self.keys.get_mut(key)) {
            // An existing key: no new allocation for it.
            (Some(meta), Some(old)) => std::mem::replace(old, meta).lease,
            (Some(meta), None) => {
                self.keys.insert(key.into(), meta);
                0
            }
            (None, _) => self.keys.remove(key).map_or(0, |old| old.lease),
        }
    }

    /// Every live key and its meta, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &KeyMeta)> {
        self.keys.iter().map(|(k, m)| (&**k, m))
    }

    /// How many keys are live.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<KeyMeta> {
        self.keys.get(key).copied()
    }

    /// Takes in the versions of a batch that was written, in order, and
    /// returns every change of a key's lease in it: (key, old, new).
    pub(crate) fn update(&mut self, versions: &[Version]) -> Vec<(Vec<u8>, i64, i64)> {
        let mut moved = Vec::new();
        for v in versions {
            let new = v.state.as_ref().map_or(0, |kv| kv.lease);
            let old = self.set(&v.key, v.state.as_ref().map(KeyMeta::of));
            if old != new {
                moved.push((v.key.clone(), old, new));
            }
        }
        moved
    }
}
