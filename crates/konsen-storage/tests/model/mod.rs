//! A deliberately simple model of the key-value state machine, written
//! from etcd's documented behavior, that the tests compare the real store
//! against. Shared by the property test and the crash test.

use std::collections::BTreeMap;

use konsen_core::{Entry, EntryKind};
use konsen_storage::{
    ApplyOutcome, Command, DeleteRangeResult, KeyValue, PutResult, REVISION_INITIAL, RequestError,
};

/// The store's state: the revision and every live key.
#[derive(Clone, Debug)]
pub struct Model {
    pub revision: i64,
    pub keys: BTreeMap<Vec<u8>, KeyValue>,
}

impl Model {
    pub fn new() -> Self {
        Model {
            revision: REVISION_INITIAL,
            keys: BTreeMap::new(),
        }
    }

    /// Whether `k` is selected by etcd's `(key, range_end)`.
    pub fn in_range(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
        if range_end.is_empty() {
            k == key
        } else if range_end == [0] {
            k >= key
        } else {
            k >= key && k < range_end
        }
    }

    /// Applies one entry, returning what the store should report.
    pub fn apply(&mut self, entry: &Entry) -> ApplyOutcome {
        if entry.kind == EntryKind::Membership || entry.data.is_empty() {
            return ApplyOutcome::Empty;
        }
        let command = match Command::decode(&entry.data) {
            Ok(command) => command,
            Err(e) => return ApplyOutcome::Rejected(RequestError::Decode(e)),
        };
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
                    return ApplyOutcome::Rejected(RequestError::EmptyKey);
                }
                let prev = self.keys.get(&key).cloned();
                if prev.is_none() && (ignore_value || ignore_lease) {
                    return ApplyOutcome::Rejected(RequestError::KeyNotFound);
                }
                self.revision += 1;
                let kv = KeyValue {
                    key: key.clone(),
                    value: match (&prev, ignore_value) {
                        (Some(p), true) => p.value.clone(),
                        _ => value,
                    },
                    create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
                    mod_revision: self.revision,
                    version: prev.as_ref().map_or(0, |p| p.version) + 1,
                    lease: match (&prev, ignore_lease) {
                        (Some(p), true) => p.lease,
                        _ => lease,
                    },
                };
                self.keys.insert(key, kv);
                ApplyOutcome::Put(PutResult {
                    revision: self.revision,
                    prev_kv: prev.filter(|_| prev_kv),
                })
            }
            Command::DeleteRange {
                key,
                range_end,
                prev_kv,
            } => {
                if key.is_empty() {
                    return ApplyOutcome::Rejected(RequestError::EmptyKey);
                }
                let doomed: Vec<KeyValue> = self
                    .keys
                    .values()
                    .filter(|kv| Self::in_range(&key, &range_end, &kv.key))
                    .cloned()
                    .collect();
                if !doomed.is_empty() {
                    self.revision += 1;
                }
                for kv in &doomed {
                    self.keys.remove(&kv.key);
                }
                ApplyOutcome::DeleteRange(DeleteRangeResult {
                    revision: self.revision,
                    deleted: doomed.len() as i64,
                    prev_kvs: if prev_kv { doomed } else { Vec::new() },
                })
            }
        }
    }

    /// Every live key, sorted.
    pub fn kvs(&self) -> Vec<KeyValue> {
        self.keys.values().cloned().collect()
    }
}
