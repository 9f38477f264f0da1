//! The simulated state machine: a few keys with put and compare-and-swap,
//! the shape of the server's KV with `Txn`. The checker compares the state
//! each node reaches after every index, so a command applied differently on
//! two nodes is caught, not only a different command.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use konsen_core::{Entry, EntryKind, Index};

/// Keys the clients write: few, so that compare-and-swaps contend.
pub const KEYS: u64 = 4;

/// A client command, written as text so that traces read:
/// `put KEY VALUE`, or `cas KEY MOD VALUE`, which writes only if KEY was
/// last written at index MOD (0: the key does not exist), like a txn that
/// compares `mod_revision` and then puts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: String,
        value: String,
    },
    Cas {
        key: String,
        expected_mod: Index,
        value: String,
    },
}

impl Command {
    pub fn encode(&self) -> Bytes {
        Bytes::from(match self {
            Command::Put { key, value } => format!("put {key} {value}"),
            Command::Cas {
                key,
                expected_mod,
                value,
            } => format!("cas {key} {expected_mod} {value}"),
        })
    }

    /// Panics on anything but what `encode` makes: only the simulator
    /// proposes, so another payload is a bug in it or in the core.
    fn decode(data: &[u8]) -> Command {
        let text = std::str::from_utf8(data).expect("sim: a command is UTF-8");
        let parts: Vec<&str> = text.split(' ').collect();
        match parts[..] {
            ["put", key, value] => Command::Put {
                key: key.into(),
                value: value.into(),
            },
            ["cas", key, expected, value] => Command::Cas {
                key: key.into(),
                expected_mod: expected.parse().expect("sim: a cas names a mod index"),
                value: value.into(),
            },
            _ => panic!("sim: applied an entry that is no command: {text:?}"),
        }
    }
}

/// How a command came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A no-op or membership entry.
    Nothing,
    Written,
    CasWritten,
    CasFailed,
}

/// The state: each key's value and the index that last wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ToyKv {
    applied: Index,
    keys: BTreeMap<String, (String, Index)>,
}

impl ToyKv {
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The index that last wrote `key`, 0 if it does not exist.
    pub fn mod_index(&self, key: &str) -> Index {
        self.keys.get(key).map_or(0, |(_, m)| *m)
    }

    /// Applies entry `e`, the next one. With `skip_compare`, a
    /// compare-and-swap writes whatever the key holds: the bug a negative
    /// control plants in one node.
    pub fn apply(&mut self, e: &Entry, skip_compare: bool) -> Outcome {
        assert_eq!(
            e.index,
            self.applied + 1,
            "sim: the state machine applies in order"
        );
        self.applied = e.index;
        if e.kind != EntryKind::Normal || e.data.is_empty() {
            return Outcome::Nothing;
        }
        match Command::decode(&e.data) {
            Command::Put { key, value } => {
                self.keys.insert(key, (value, e.index));
                Outcome::Written
            }
            Command::Cas {
                key,
                expected_mod,
                value,
            } => {
                if !skip_compare && self.mod_index(&key) != expected_mod {
                    return Outcome::CasFailed;
                }
                self.keys.insert(key, (value, e.index));
                Outcome::CasWritten
            }
        }
    }

    /// A digest of the whole state, compared across nodes.
    pub fn digest(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}
