//! The key-value state machine: etcd's revision rules, range semantics,
//! how entries are applied (once, in order, with no-ops and bad payloads),
//! and a property test against a simple model.

mod support;

mod model;

use bytes::Bytes;
use konsen_core::storage::Storage;
use konsen_core::{Entry, EntryKind, HardState, Index};
use konsen_storage::{
    ApplyOutcome, ApplyResult, Command, CompactResult, DeleteRangeResult, KeyValue, KvStore,
    NodeIdentity, PutResult, RangeRequest, RequestError, RocksStore, StorageError, StorageOptions,
};
use model::Model;
use proptest::prelude::*;
use tempfile::TempDir;

const IDENTITY: NodeIdentity = NodeIdentity {
    cluster_id: 0xc1,
    node_id: 1,
};

fn open(dir: &TempDir) -> RocksStore {
    RocksStore::open(dir.path(), IDENTITY, StorageOptions::default()).expect("open store")
}

fn normal(index: Index, data: Bytes) -> Entry {
    Entry {
        index,
        term: 1,
        kind: EntryKind::Normal,
        data,
    }
}

/// Appends commands to the log as committed entries, as a driver does,
/// and applies them.
fn apply(store: &mut RocksStore, commands: &[Command]) -> Vec<ApplyOutcome> {
    support::apply_committed(store, 1, commands)
}

fn put_prev(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease: 0,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: false,
    }
}

fn record(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

fn range(kv: &KvStore, key: &[u8], range_end: &[u8]) -> Vec<Vec<u8>> {
    let request = RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..RangeRequest::default()
    };
    let response = kv.range(&request).expect("range");
    response.kvs.into_iter().map(|kv| kv.key).collect()
}

#[test]
fn revisions_follow_etcd() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    assert_eq!(
        store.kv.revision(),
        1,
        "a fresh store is at revision 1, like a fresh etcd"
    );
    assert_eq!(store.kv.applied_index(), 0);

    let outcomes = apply(
        &mut store,
        &[put_prev("a", "1"), put_prev("a", "2"), put_prev("b", "x")],
    );
    assert_eq!(
        outcomes,
        vec![
            ApplyOutcome::Put(PutResult {
                revision: 2,
                prev_kv: None
            }),
            ApplyOutcome::Put(PutResult {
                revision: 3,
                prev_kv: Some(record("a", "1", 2, 2, 1))
            }),
            ApplyOutcome::Put(PutResult {
                revision: 4,
                prev_kv: None
            }),
        ],
        "the first put gets revision 2; later puts in the same batch see earlier ones"
    );
    assert_eq!(store.kv.get(b"a").unwrap(), Some(record("a", "2", 2, 3, 2)));

    let outcomes = apply(&mut store, &[Command::delete_range("zzz", "")]);
    assert_eq!(
        outcomes,
        vec![ApplyOutcome::DeleteRange(DeleteRangeResult {
            revision: 4,
            deleted: 0,
            prev_kvs: vec![]
        })],
        "a delete that removes nothing keeps the revision"
    );
    assert_eq!(store.kv.revision(), 4);

    let delete_all = Command::DeleteRange {
        key: b"a".to_vec(),
        range_end: vec![0],
        prev_kv: true,
    };
    let outcomes = apply(&mut store, &[delete_all, put_prev("a", "again")]);
    assert_eq!(
        outcomes,
        vec![
            ApplyOutcome::DeleteRange(DeleteRangeResult {
                revision: 5,
                deleted: 2,
                prev_kvs: vec![record("a", "2", 2, 3, 2), record("b", "x", 4, 4, 1)]
            }),
            ApplyOutcome::Put(PutResult {
                revision: 6,
                prev_kv: None
            }),
        ],
        "a delete of several keys is one revision; a re-created key starts over"
    );
    assert_eq!(
        store.kv.get(b"a").unwrap(),
        Some(record("a", "again", 6, 6, 1))
    );
    assert_eq!(store.kv.get(b"b").unwrap(), None);

    drop(store);
    let store = open(&dir);
    assert_eq!(
        (store.kv.applied_index(), store.kv.revision()),
        (6, 6),
        "applied index and revision persist"
    );
    assert_eq!(
        store.kv.get(b"a").unwrap(),
        Some(record("a", "again", 6, 6, 1))
    );
}

#[test]
fn entries_apply_once_in_order_and_no_ops_advance() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    let entries = vec![
        normal(1, Bytes::new()),
        Entry {
            index: 2,
            term: 1,
            kind: EntryKind::Membership,
            data: Bytes::from_static(b"voters"),
        },
        normal(3, Command::put("k", "v").encode()),
        normal(4, Bytes::from_static(b"\x01\x09garbage")),
        normal(5, Command::put("", "v").encode()),
    ];
    let results = store.kv.apply(&entries).unwrap();
    let outcomes: Vec<_> = results
        .iter()
        .map(|r| (r.index, r.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes[0],
        (1, ApplyOutcome::Empty),
        "a leader's no-op applies as nothing"
    );
    assert_eq!(
        outcomes[1],
        (2, ApplyOutcome::Empty),
        "a membership entry applies as nothing"
    );
    assert!(matches!(
        outcomes[2],
        (3, ApplyOutcome::Put(PutResult { revision: 2, .. }))
    ));
    assert!(
        matches!(
            outcomes[3],
            (4, ApplyOutcome::Rejected(RequestError::Decode(_)))
        ),
        "a payload that does not decode is rejected: {:?}",
        outcomes[3]
    );
    assert_eq!(
        outcomes[4],
        (5, ApplyOutcome::Rejected(RequestError::EmptyKey))
    );
    assert_eq!(
        (store.kv.applied_index(), store.kv.revision()),
        (5, 2),
        "rejections advance the index only"
    );

    let again = store.kv.apply(&entries).unwrap();
    assert!(
        again.is_empty(),
        "entries at or below the applied index are skipped"
    );
    let mut overlapping = entries[3..].to_vec();
    overlapping.push(normal(6, Command::put("k", "w").encode()));
    let results = store.kv.apply(&overlapping).unwrap();
    assert_eq!(
        results,
        vec![ApplyResult {
            index: 6,
            outcome: ApplyOutcome::Put(PutResult {
                revision: 3,
                prev_kv: None
            })
        }],
        "only the new entry of an overlapping batch is applied"
    );
    assert_eq!(store.kv.get(b"k").unwrap().unwrap().version, 2);

    let gap = store
        .kv
        .apply(&[normal(8, Command::put("k", "x").encode())]);
    assert!(
        matches!(
            gap,
            Err(StorageError::ApplyGap {
                applied: 6,
                index: 8
            })
        ),
        "a skipped index is an error: {gap:?}"
    );
    assert_eq!(
        store.kv.applied_index(),
        6,
        "a refused batch applies nothing"
    );
}

#[test]
fn ignore_value_and_ignore_lease_keep_the_current_ones() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    let touch = |key: &str| Command::Put {
        key: key.into(),
        value: Bytes::new(),
        lease: 0,
        prev_kv: false,
        ignore_value: true,
        ignore_lease: true,
    };
    let leased = Command::Put {
        key: b"k".to_vec(),
        value: Bytes::from_static(b"v"),
        lease: 77,
        prev_kv: false,
        ignore_value: false,
        ignore_lease: false,
    };
    let grant = Command::LeaseGrant { id: 77, ttl: 60 };
    let outcomes = apply(&mut store, &[grant, touch("k"), leased, touch("k")]);
    let outcomes = &outcomes[1..];
    assert_eq!(
        outcomes[0],
        ApplyOutcome::Rejected(RequestError::KeyNotFound)
    );
    assert!(matches!(
        outcomes[2],
        ApplyOutcome::Put(PutResult { revision: 3, .. })
    ));
    let stored = store.kv.get(b"k").unwrap().unwrap();
    assert_eq!(
        (stored.value.as_ref(), stored.lease, stored.version),
        (&b"v"[..], 77, 2)
    );
}

#[test]
fn range_follows_etcd_semantics() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    let keys = ["a", "b", "b/1", "b/2", "c", "d"];
    let puts: Vec<Command> = keys
        .iter()
        .map(|k| Command::put(*k, format!("v-{k}")))
        .collect();
    apply(&mut store, &puts);
    let all: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();

    assert_eq!(
        range(&store.kv, b"b", b""),
        vec![b"b".to_vec()],
        "empty range_end: one key"
    );
    assert_eq!(range(&store.kv, b"b", b"c"), all[1..4], "[b, c)");
    assert_eq!(range(&store.kv, b"b/", b"b0"), all[2..4], "a prefix");
    assert_eq!(
        range(&store.kv, b"c", &[0]),
        all[4..],
        "range_end [0]: every key >= key"
    );
    assert_eq!(
        range(&store.kv, &[0], &[0]),
        all,
        "key [0], range_end [0]: every key"
    );
    assert!(
        range(&store.kv, b"c", b"a").is_empty(),
        "range_end before key: nothing"
    );
    assert!(
        range(&store.kv, b"zz", b"").is_empty(),
        "a missing key: nothing"
    );

    let request = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        limit: 2,
        ..RangeRequest::default()
    };
    let limited = store.kv.range(&request).unwrap();
    assert_eq!(limited.kvs.len(), 2);
    assert_eq!(
        (limited.count, limited.more, limited.revision),
        (6, true, 7)
    );
    assert_eq!(limited.kvs[0], record("a", "v-a", 2, 2, 1));
    let limit_above = store
        .kv
        .range(&RangeRequest {
            limit: 6,
            ..request.clone()
        })
        .unwrap();
    assert_eq!(
        (limit_above.kvs.len(), limit_above.more),
        (6, false),
        "a limit not reached"
    );

    let keys_only = store
        .kv
        .range(&RangeRequest {
            keys_only: true,
            limit: 0,
            ..request.clone()
        })
        .unwrap();
    assert!(
        keys_only
            .kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.mod_revision > 0)
    );
    let count_only = store
        .kv
        .range(&RangeRequest {
            count_only: true,
            ..request.clone()
        })
        .unwrap();
    assert_eq!(
        (count_only.kvs.len(), count_only.count, count_only.more),
        (0, 6, false)
    );

    let at_current = RangeRequest {
        revision: 7,
        ..request.clone()
    };
    assert!(
        store.kv.range(&at_current).is_ok(),
        "the current revision can be read"
    );
    // A read at an old revision sees the store as it was then, with the
    // records of then.
    let historical = store
        .kv
        .range(&RangeRequest {
            revision: 3,
            limit: 0,
            ..request.clone()
        })
        .unwrap();
    assert_eq!(
        historical.kvs,
        vec![record("a", "v-a", 2, 2, 1), record("b", "v-b", 3, 3, 1)]
    );
    assert_eq!((historical.count, historical.more), (2, false));
    // Revision 1, before the first write: nothing.
    let first = store
        .kv
        .range(&RangeRequest {
            revision: 1,
            ..request.clone()
        })
        .unwrap();
    assert_eq!((first.kvs.len(), first.count), (0, 0));
    // After a compaction at 5, revisions below it are refused with etcd's
    // words, and 5 itself can still be read.
    assert_eq!(
        apply(&mut store, &[Command::Compact { revision: 5 }]),
        vec![ApplyOutcome::Compact(CompactResult { revision: 7 })]
    );
    assert_eq!(store.kv.compacted_revision(), 5);
    let compacted = store
        .kv
        .range(&RangeRequest {
            revision: 3,
            ..request.clone()
        })
        .unwrap_err();
    assert!(
        matches!(
            compacted,
            StorageError::Request(RequestError::Compacted {
                requested: 3,
                compacted: 5
            })
        ),
        "{compacted:?}"
    );
    assert_eq!(
        compacted.to_string(),
        "mvcc: required revision has been compacted"
    );
    let at_compacted = store
        .kv
        .range(&RangeRequest {
            revision: 5,
            limit: 0,
            ..request.clone()
        })
        .unwrap();
    assert_eq!(
        at_compacted
            .kvs
            .iter()
            .map(|kv| &kv.key[..])
            .collect::<Vec<_>>(),
        vec![&b"a"[..], b"b", b"b/1", b"b/2"]
    );
    let future = store.kv.range(&RangeRequest {
        revision: 8,
        ..request.clone()
    });
    assert!(matches!(
        future,
        Err(StorageError::Request(RequestError::FutureRevision { .. }))
    ));
    let no_key = store.kv.range(&RangeRequest::default()).unwrap_err();
    assert_eq!(no_key.to_string(), "key is not provided");
}

#[test]
fn data_size_is_reported() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    apply(&mut store, &[Command::put("k", vec![7u8; 64 * 1024])]);
    let size = store.kv.data_size_bytes().unwrap();
    assert!(
        size >= 64 * 1024,
        "a 64 KiB value shows in the data size ({size} bytes)"
    );
}

/// One step of the property test: a command from a small key space.
#[derive(Clone, Debug)]
enum Op {
    /// Put to key `a + key` a value of `value % 5` copies of `value`.
    Put { key: u8, value: u8, prev_kv: bool },
    /// Delete from key `a + key`: only it (`span` 0), every key from it on
    /// (1), or the `span - 1` keys from it.
    Delete { key: u8, span: u8, prev_kv: bool },
    /// An empty entry, like a new leader's no-op.
    Nothing,
}

fn key_name(k: u8) -> Vec<u8> {
    vec![b'a' + k]
}

impl Op {
    fn entry(&self, index: Index) -> Entry {
        let data = match *self {
            Op::Put {
                key,
                value,
                prev_kv,
            } => Command::Put {
                key: key_name(key),
                value: Bytes::from(vec![value; value as usize % 5]),
                lease: 0,
                prev_kv,
                ignore_value: false,
                ignore_lease: false,
            }
            .encode(),
            Op::Delete { key, span, prev_kv } => Command::DeleteRange {
                key: key_name(key),
                range_end: match span {
                    0 => Vec::new(),
                    1 => vec![0],
                    n => key_name(key + n - 1),
                },
                prev_kv,
            }
            .encode(),
            Op::Nothing => Bytes::new(),
        };
        normal(index, data)
    }
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..6, any::<u8>(), any::<bool>()).prop_map(|(key, value, prev_kv)| Op::Put { key, value, prev_kv }),
        2 => (0u8..6, 0u8..4, any::<bool>()).prop_map(|(key, span, prev_kv)| Op::Delete { key, span, prev_kv }),
        1 => Just(Op::Nothing),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Revisions, create/mod revisions, versions, values and every result
    /// match the model, however the entries are split into batches.
    #[test]
    fn apply_matches_the_model(
        ops in proptest::collection::vec(any_op(), 1..60),
        cuts in proptest::collection::vec(1usize..8, 1..20),
    ) {
        let dir = TempDir::new().unwrap();
        let mut store = open(&dir);
        let mut model = Model::new();
        let entries: Vec<Entry> = ops.iter().enumerate().map(|(i, op)| op.entry(i as Index + 1)).collect();
        let mut rest = &entries[..];
        let mut reopened = false;
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            if !reopened && rest.len() <= entries.len() / 2 {
                // Halfway, a restart: the state reloaded from disk must
                // go on agreeing with the model.
                reopened = true;
                drop(store);
                store = open(&dir);
            }
            let (batch, tail) = rest.split_at((*cut).min(rest.len()));
            rest = tail;
            // As a driver does: committed entries are in the log first.
            let hs = HardState { term: 1, vote: Some(1), commit: batch[batch.len() - 1].index };
            store.log.append(Some(hs), batch).unwrap();
            let results = store.kv.apply(batch).unwrap();
            prop_assert_eq!(results.len(), batch.len());
            for (entry, result) in batch.iter().zip(results) {
                prop_assert_eq!(result.index, entry.index);
                prop_assert_eq!(result.outcome, model.apply(entry), "entry {}", entry.index);
            }
            prop_assert_eq!(store.kv.revision(), model.revision);
            let request = RangeRequest { key: vec![0], range_end: vec![0], ..RangeRequest::default() };
            let all = store.kv.range(&request).unwrap();
            // The reader beside the node loop sees the same state and revision.
            prop_assert_eq!(&store.kv.reader().range(&request).unwrap(), &all);
            prop_assert_eq!(all.count, model.keys.len() as i64);
            prop_assert_eq!(all.kvs, model.kvs());
        }
        prop_assert_eq!(store.kv.applied_index(), entries.len() as Index);
    }
}
