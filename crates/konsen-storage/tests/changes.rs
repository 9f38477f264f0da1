//! The change feed and the history read as changes, which Watch is built
//! on: random puts, deletes, range deletes, txns and compactions, checked
//! against a plain model of etcd's revisions.
//!
//! * The feed hands out exactly each batch's changes, in revision order, a
//!   txn's at one revision in key order (as the history stores them; etcd
//!   orders them by operation).
//! * `KvReader::changes` from any revision not compacted reads the same
//!   changes in pages that never split a revision; a key range filters
//!   them; below the compacted revision it is refused; at the compacted
//!   revision itself only the puts remain (the compaction dropped the
//!   deletes there), whether or not the deleter has run.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use konsen_storage::{
    Change, Command, KeyValue, NodeIdentity, RequestError, RocksStore, StorageError,
    StorageOptions, Txn, TxnOp,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

const KEYS: u32 = 8;
const STEPS: usize = 300;

fn apply(store: &mut RocksStore, commands: &[Command]) {
    support::apply_committed(store, 1, commands);
}

/// The model: each live key's (value, create revision, version), the
/// revision, the compacted revision, and every change so far.
#[derive(Default)]
struct Model {
    live: BTreeMap<Vec<u8>, (Bytes, i64, i64)>,
    revision: i64,
    compacted: i64,
    changes: Vec<Change>,
}

impl Model {
    fn new() -> Model {
        Model {
            revision: 1,
            ..Model::default()
        }
    }

    fn put(&mut self, key: &[u8], value: &Bytes, revision: i64) -> Change {
        let (create, version) = match self.live.get(key) {
            Some(&(_, create, version)) => (create, version + 1),
            None => (revision, 1),
        };
        self.live
            .insert(key.to_vec(), (value.clone(), create, version));
        Change {
            key: key.to_vec(),
            revision,
            state: Some(KeyValue {
                key: key.to_vec(),
                value: value.clone(),
                create_revision: create,
                mod_revision: revision,
                version,
                lease: 0,
            }),
        }
    }

    fn delete(&mut self, key: &[u8], revision: i64) -> Change {
        self.live.remove(key);
        Change {
            key: key.to_vec(),
            revision,
            state: None,
        }
    }

    /// Applies `command` to the model; returns its changes.
    fn apply(&mut self, command: &Command) -> Vec<Change> {
        let next = self.revision + 1;
        let changes = match command {
            Command::Put { key, value, .. } => vec![self.put(key, value, next)],
            Command::DeleteRange { key, range_end, .. } => {
                let doomed: Vec<Vec<u8>> = self
                    .live
                    .keys()
                    .filter(|k| {
                        if range_end.is_empty() {
                            *k == key
                        } else {
                            k.as_slice() >= key.as_slice() && k.as_slice() < range_end.as_slice()
                        }
                    })
                    .cloned()
                    .collect();
                doomed.iter().map(|k| self.delete(k, next)).collect()
            }
            Command::Txn(txn) => {
                let mut changes = Vec::new();
                for op in &txn.success {
                    match op {
                        TxnOp::Put { key, value, .. } => changes.push(self.put(key, value, next)),
                        TxnOp::DeleteRange { key, .. } if self.live.contains_key(key) => {
                            changes.push(self.delete(key, next))
                        }
                        _ => {}
                    }
                }
                changes.sort_by(|a, b| a.key.cmp(&b.key));
                changes
            }
            // This model's commands use no leases.
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => Vec::new(),
            Command::Compact { revision } => {
                // One at or below the compacted revision is refused (two
                // compactions of one batch may come in either order).
                self.compacted = self.compacted.max(*revision);
                Vec::new()
            }
        };
        if !changes.is_empty() {
            self.revision = next;
        }
        self.changes.extend(changes.iter().cloned());
        changes
    }

    /// The changes a read from `from` must give, in `[start, end)` (`end`
    /// empty: every key), as of the model's state: at the compacted
    /// revision only puts remain.
    fn expected(&self, from: i64, start: &[u8], end: &[u8]) -> Vec<Change> {
        self.changes
            .iter()
            .filter(|c| c.revision >= from)
            .filter(|c| c.revision > self.compacted || c.state.is_some())
            .filter(|c| c.key.as_slice() >= start && (end.is_empty() || c.key.as_slice() < end))
            .cloned()
            .collect()
    }
}

fn key(rng: &mut SmallRng) -> Vec<u8> {
    format!("k{}", rng.random_range(0..KEYS)).into_bytes()
}

fn command(rng: &mut SmallRng, model: &Model, n: &mut u64) -> Command {
    *n += 1;
    let value = Bytes::from(format!("v{n}"));
    match rng.random_range(0..20) {
        0..=9 => Command::put(key(rng), value),
        10..=12 => Command::DeleteRange {
            key: key(rng),
            range_end: Vec::new(),
            prev_kv: false,
        },
        13 => Command::DeleteRange {
            key: b"k2".to_vec(),
            range_end: b"k5".to_vec(),
            prev_kv: false,
        },
        14..=16 => {
            // Two different keys: a put and a delete at one revision.
            let put = key(rng);
            let mut delete = key(rng);
            while delete == put {
                delete = key(rng);
            }
            Command::Txn(Txn {
                compare: Vec::new(),
                success: vec![
                    TxnOp::Put {
                        key: put,
                        value,
                        lease: 0,
                        prev_kv: false,
                        ignore_value: false,
                        ignore_lease: false,
                    },
                    TxnOp::DeleteRange {
                        key: delete,
                        range_end: Vec::new(),
                        prev_kv: false,
                    },
                ],
                failure: Vec::new(),
            })
        }
        _ => {
            let revision = rng.random_range(model.compacted.max(1)..=model.revision);
            Command::Compact { revision }
        }
    }
}

/// Reads every change from `from` in `[start, end)` in pages of about
/// `page` changes, checking that no page splits a revision.
fn read_all(
    store: &RocksStore,
    from: i64,
    start: &[u8],
    end: &[u8],
    page: usize,
) -> Result<Vec<Change>, StorageError> {
    let reader = store.kv.reader();
    let (mut all, mut from) = (Vec::new(), from);
    for _ in 0..10_000 {
        let read = reader.changes(start.to_vec(), end.to_vec(), from, page)?;
        if let (Some(last), Some(first)) = (all.last(), read.changes.first()) {
            let (last, first): (&Change, &Change) = (last, first);
            assert!(
                last.revision < first.revision,
                "a page boundary splits revision {}",
                first.revision
            );
        }
        assert!(
            read.next > from || read.next > read.revision,
            "changes() advances"
        );
        all.extend(read.changes);
        if read.next > read.revision {
            return Ok(all);
        }
        from = read.next;
    }
    panic!("changes() did not reach the store's revision in 10,000 pages");
}

#[test]
fn the_feed_and_the_history_read_as_changes_agree_with_the_model() {
    for seed in 0..4 {
        let dir = TempDir::new().unwrap();
        let mut store = RocksStore::open(
            dir.path(),
            NodeIdentity {
                cluster_id: 1,
                node_id: 1,
            },
            StorageOptions::default(),
        )
        .unwrap();
        store.kv.feed_changes();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut model = Model::new();
        let mut n = 0;
        let (mut checked_reads, mut refused) = (0, 0);
        for step in 0..STEPS {
            let batch: Vec<Command> = (0..rng.random_range(1..=3))
                .map(|_| command(&mut rng, &model, &mut n))
                .collect();
            let mut want = Vec::new();
            for c in &batch {
                want.extend(model.apply(c));
            }
            apply(&mut store, &batch);
            assert_eq!(
                store.kv.take_changes(),
                want,
                "seed {seed} step {step}: the feed"
            );
            assert_eq!(store.kv.revision(), model.revision);
            if step % 10 != 9 {
                continue;
            }
            // Sometimes let the deleter finish the compactions' deletes.
            if rng.random_bool(0.5) {
                store.kv.reader().wait_for_compaction();
            }
            let from = rng.random_range(model.compacted.max(1)..=model.revision + 1);
            let page = rng.random_range(1..6);
            let got = read_all(&store, from, &[0], &[0], page).unwrap();
            assert_eq!(
                got,
                model.expected(from, &[0], &[]),
                "seed {seed} step {step}: all keys from {from}"
            );
            let got = read_all(&store, from, b"k2", b"k5", page).unwrap();
            assert_eq!(
                got,
                model.expected(from, b"k2", b"k5"),
                "seed {seed} step {step}: k2..k5 from {from}"
            );
            let got = read_all(&store, from, b"k3", &[], page).unwrap();
            assert_eq!(
                got,
                model.expected(from, b"k3", b"k3\0"),
                "seed {seed} step {step}: k3 from {from}"
            );
            checked_reads += 3;
            if model.compacted > 1 {
                let below = model.compacted - 1;
                match read_all(&store, below, &[0], &[0], page) {
                    Err(StorageError::Request(RequestError::Compacted {
                        requested,
                        compacted,
                    })) => {
                        assert_eq!((requested, compacted), (below, model.compacted));
                        refused += 1;
                    }
                    other => panic!(
                        "seed {seed}: a read from {below} below the compaction gave {other:?}"
                    ),
                }
            }
        }
        assert!(
            checked_reads > 50 && refused > 5,
            "seed {seed}: {checked_reads} reads, {refused} refused"
        );
    }
}
