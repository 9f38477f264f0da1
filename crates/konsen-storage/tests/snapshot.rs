//! Snapshots: what one node reads is what another installs, byte for
//! byte; an abandoned or malformed transfer leaves the receiver's state
//! alone; a restart after an install serves the snapshot and the log
//! after it; a follower that installs a snapshot serves the history since
//! the compaction point.

mod support;

use bytes::Bytes;
use konsen_core::HardState;
use konsen_core::storage::Storage;
use konsen_storage::{
    Command, Compare, CompareResult, CompareTarget, NodeIdentity, RangeRequest, RequestError,
    RocksStore, SnapshotHeader, SortOrder, SortTarget, StorageError, StorageOptions, Txn, TxnOp,
    install_snapshot,
};
use tempfile::TempDir;

fn identity(node_id: u64) -> NodeIdentity {
    NodeIdentity {
        cluster_id: 0xc1,
        node_id,
    }
}

fn open(dir: &TempDir, node: u64) -> RocksStore {
    RocksStore::open(dir.path(), identity(node), StorageOptions::default()).expect("open store")
}

/// Appends `commands` as committed entries of `term` and applies them.
fn apply(store: &mut RocksStore, term: u64, commands: &[Command]) {
    support::apply_committed(store, term, commands);
}

fn everything(store: &RocksStore) -> Vec<(Vec<u8>, Bytes, i64, i64, i64)> {
    let response = store
        .kv
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .expect("range");
    response
        .kvs
        .into_iter()
        .map(|kv| {
            (
                kv.key,
                kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect()
}

/// 500 keys, some written twice, some deleted.
fn fill(store: &mut RocksStore) {
    let puts: Vec<Command> = (0..500)
        .map(|i| Command::put(format!("key-{i:04}"), Bytes::from(vec![b'v'; 100 + i % 7])))
        .collect();
    apply(store, 2, &puts);
    let again: Vec<Command> = (0..500)
        .step_by(3)
        .map(|i| Command::put(format!("key-{i:04}"), Bytes::from_static(b"again")))
        .collect();
    apply(store, 3, &again);
    apply(store, 3, &[Command::delete_range("key-0100", "key-0200")]);
}

/// Reads `from`'s snapshot into chunks.
fn read_chunks(from: &RocksStore, chunk_bytes_max: usize) -> (SnapshotHeader, Vec<Vec<u8>>) {
    let mut header = None;
    let mut chunks = Vec::new();
    from.kv
        .snapshots()
        .read(
            chunk_bytes_max,
            |h| {
                header = Some(h);
                true
            },
            |c| {
                chunks.push(c);
                true
            },
        )
        .expect("read snapshot");
    (header.expect("a header"), chunks)
}

/// Receives `chunks` into `to` and installs them, as a follower in term 3.
fn receive_and_install(to: &mut RocksStore, header: SnapshotHeader, chunks: &[Vec<u8>]) {
    let mut receiving = to.kv.snapshots().receive(header).unwrap();
    for chunk in chunks {
        receiving.add_chunk(chunk).unwrap();
    }
    let hs = HardState {
        term: 3,
        vote: None,
        commit: header.index,
    };
    install_snapshot(&mut to.log, &mut to.kv, receiving.finish(), hs).unwrap();
}

#[test]
fn an_installed_snapshot_equals_the_source_and_survives_a_restart() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = open(&dir_a, 1);
    fill(&mut a);
    let (header, chunks) = read_chunks(&a, 4096);
    assert_eq!(header.index, a.kv.applied_index());
    assert_eq!(header.term, 3);
    assert_eq!(header.revision, a.kv.revision());
    assert!(chunks.len() > 5, "small chunks: {}", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= 4096));

    // B has a state of its own, which the snapshot replaces.
    let mut b = open(&dir_b, 2);
    apply(&mut b, 1, &[Command::put("only-on-b", "x")]);
    let mut receiving = b.kv.snapshots().receive(header).expect("receive");
    for chunk in &chunks {
        receiving.add_chunk(chunk).expect("chunk");
    }
    // Until it is installed, B serves its old state.
    assert_eq!(everything(&b).len(), 1);
    let staged = receiving.finish();
    assert_eq!(staged.stats().keys, everything(&a).len() as u64);
    let hs = HardState {
        term: 4,
        vote: None,
        commit: header.index,
    };
    let reader = b.kv.reader();
    install_snapshot(&mut b.log, &mut b.kv, staged, hs).expect("install");
    assert_eq!(everything(&b), everything(&a));
    // A reader made before the install reads the installed state.
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    assert_eq!(reader.range(&all).unwrap(), a.kv.range(&all).unwrap());
    drop(reader);
    assert_eq!(b.kv.applied_index(), a.kv.applied_index());
    assert_eq!(b.kv.revision(), a.kv.revision());
    assert_eq!(b.log.purged(), (header.index, header.term));
    assert_eq!(
        b.kv.snapshots().hash().unwrap().0,
        a.kv.snapshots().hash().unwrap().0
    );

    // The log goes on after the snapshot: puts continue the installed keys'
    // versions, and a key only B had is created anew (B's key index is the
    // installed state's). A restart keeps everything.
    let more = [
        Command::put("after", "snapshot"),
        Command::put("key-0003", "x"),
        Command::put("only-on-b", "y"),
    ];
    apply(&mut a, 4, &more);
    apply(&mut b, 4, &more);
    assert_eq!(everything(&b), everything(&a));
    let expected = everything(&b);
    drop(b);
    let b = open(&dir_b, 2);
    assert_eq!(everything(&b), expected);
    let stored = b.log.load().unwrap();
    assert_eq!((stored.purged_index, stored.purged_term), (header.index, 3));
    assert_eq!(stored.entries.len(), more.len());
    assert_eq!(stored.hard_state.term, 4);
}

#[test]
fn a_second_snapshot_replaces_the_first() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = open(&dir_a, 1);
    let mut b = open(&dir_b, 2);
    for round in 0..3 {
        fill(&mut a);
        apply(&mut a, 3, &[Command::put(format!("round-{round}"), "r")]);
        let (header, chunks) = read_chunks(&a, 1 << 20);
        receive_and_install(&mut b, header, &chunks);
        assert_eq!(everything(&b), everything(&a), "round {round}");
    }
}

#[test]
fn an_abandoned_transfer_changes_nothing_and_the_next_one_starts_over() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = open(&dir_a, 1);
    fill(&mut a);
    let (header, chunks) = read_chunks(&a, 2048);
    let mut b = open(&dir_b, 2);
    apply(&mut b, 1, &[Command::put("mine", "1")]);
    let before = everything(&b);

    let snapshots = b.kv.snapshots();
    let mut receiving = snapshots.receive(header).unwrap();
    receiving.add_chunk(&chunks[0]).unwrap();
    assert!(
        matches!(snapshots.receive(header), Err(StorageError::SnapshotBusy)),
        "one transfer at a time"
    );
    drop(receiving);
    assert_eq!(everything(&b), before);

    // A restart in the middle of a transfer keeps the old state too.
    let mut receiving = snapshots.receive(header).unwrap();
    receiving.add_chunk(&chunks[0]).unwrap();
    drop(receiving);
    drop(snapshots);
    drop(b);
    let mut b = open(&dir_b, 2);
    assert_eq!(everything(&b), before);

    receive_and_install(&mut b, header, &chunks);
    assert_eq!(everything(&b), everything(&a));
}

#[test]
fn malformed_chunks_are_refused() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = open(&dir_a, 1);
    fill(&mut a);
    let (header, chunks) = read_chunks(&a, 2048);
    let b = open(&dir_b, 2);
    let snapshots = b.kv.snapshots();

    let mut truncated = chunks[0].clone();
    truncated.truncate(truncated.len() - 3);
    let mut receiving = snapshots.receive(header).unwrap();
    let err = receiving.add_chunk(&truncated).unwrap_err();
    assert!(matches!(err, StorageError::BadSnapshot(_)), "{err}");
    drop(receiving);

    // The same chunk twice: keys no longer increase.
    let mut receiving = snapshots.receive(header).unwrap();
    receiving.add_chunk(&chunks[0]).unwrap();
    let err = receiving.add_chunk(&chunks[0]).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    drop(receiving);

    // A record from after the snapshot's revision.
    let older = SnapshotHeader {
        revision: 2,
        ..header
    };
    let mut receiving = snapshots.receive(older).unwrap();
    let err = receiving.add_chunk(&chunks[1]).unwrap_err();
    assert!(err.to_string().contains("revision"), "{err}");
    drop(receiving);

    let zero = SnapshotHeader { index: 0, ..header };
    assert!(matches!(
        snapshots.receive(zero),
        Err(StorageError::BadSnapshot(_))
    ));
    assert!(everything(&b).is_empty());
}

#[test]
fn a_snapshot_after_compaction_takes_its_term_from_the_purge_point() {
    let dir = TempDir::new().unwrap();
    let mut a = open(&dir, 1);
    fill(&mut a);
    let applied = a.kv.applied_index();
    a.log.purge(applied).unwrap();
    let (header, _) = read_chunks(&a, 1 << 20);
    assert_eq!((header.index, header.term), (applied, 3));
}

/// Range requests of several shapes at `revision`.
fn history_requests(revision: i64) -> Vec<RangeRequest> {
    let everything = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..Default::default()
    };
    vec![
        everything.clone(),
        RangeRequest {
            key: b"key-0010".to_vec(),
            range_end: b"key-0020".to_vec(),
            ..everything.clone()
        },
        RangeRequest {
            key: b"key-0003".to_vec(),
            range_end: Vec::new(),
            ..everything.clone()
        },
        RangeRequest {
            count_only: true,
            ..everything.clone()
        },
        RangeRequest {
            limit: 7,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Mod,
            min_create_revision: 3,
            keys_only: true,
            ..everything
        },
    ]
}

/// Every request of [`history_requests`] at every revision from the
/// compacted one to the current one answers on `b` as on `a` (through the
/// store and a reader), and revisions below the compacted one are refused
/// on both.
fn assert_same_history(a: &RocksStore, b: &RocksStore, what: &str) {
    let compacted = a.kv.compacted_revision();
    assert!(compacted > 1, "{what}: the source compacted");
    assert_eq!(b.kv.compacted_revision(), compacted, "{what}");
    assert_eq!(b.kv.revision(), a.kv.revision(), "{what}");
    let reader = b.kv.reader();
    let mut distinct = std::collections::BTreeSet::new();
    for revision in compacted..=a.kv.revision() {
        for request in history_requests(revision) {
            let want = a.kv.range(&request).expect("range on the source");
            assert_eq!(
                b.kv.range(&request).expect("range on the follower"),
                want,
                "{what}: {request:?}"
            );
            assert_eq!(
                reader
                    .range(&request)
                    .expect("reader range on the follower"),
                want,
                "{what}: {request:?} through a reader"
            );
            distinct.insert(format!("{:?}", want.kvs));
        }
    }
    assert!(
        distinct.len() > 20,
        "{what}: the revisions read differ ({} distinct answers)",
        distinct.len()
    );
    for below in [1, compacted / 2, compacted - 1] {
        for store in [a, b] {
            let err = store
                .kv
                .range(&history_requests(below)[0])
                .expect_err("a read below the compacted revision");
            assert!(
                matches!(
                    err,
                    StorageError::Request(RequestError::Compacted { requested, compacted: c })
                        if requested == below && c == compacted
                ),
                "{what}: revision {below}: {err:?}"
            );
        }
    }
}

/// Writes that leave history: keys rewritten in txns, deleted and
/// re-created, around a compaction.
fn fill_history(store: &mut RocksStore, term: u64, round: usize) {
    let mut commands = Vec::new();
    for i in 0..40 {
        commands.push(Command::put(
            format!("key-{:04}", (i * 7 + round) % 30),
            format!("v{round}-{i}"),
        ));
        if i % 5 == 0 {
            commands.push(Command::delete_range(
                format!("key-{:04}", i % 30),
                format!("key-{:04}", i % 30 + 3),
            ));
        }
        if i % 4 == 0 {
            let put = |k: usize| TxnOp::Put {
                key: format!("key-{k:04}").into_bytes(),
                value: Bytes::from(format!("txn{round}-{i}")),
                lease: 0,
                prev_kv: false,
                ignore_value: false,
                ignore_lease: false,
            };
            commands.push(Command::Txn(Txn {
                compare: vec![Compare {
                    key: b"key-0003".to_vec(),
                    range_end: Vec::new(),
                    result: CompareResult::Greater,
                    target: CompareTarget::Version(0),
                }],
                success: vec![put(i % 30), put(i % 30 + 31)],
                failure: vec![put(3)],
            }));
        }
    }
    apply(store, term, &commands);
}

#[test]
fn a_follower_serves_the_history_since_the_compaction_point() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = open(&dir_a, 1);
    fill_history(&mut a, 2, 0);
    let middle = a.kv.revision() / 2;
    apply(&mut a, 2, &[Command::Compact { revision: middle }]);
    assert_eq!(a.kv.compacted_revision(), middle);
    fill_history(&mut a, 3, 1);

    // Small chunks: the history spreads over many of them.
    let (header, chunks) = read_chunks(&a, 512);
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    let mut b = open(&dir_b, 2);
    apply(&mut b, 1, &[Command::put("only-on-b", "x")]);
    receive_and_install(&mut b, header, &chunks);
    assert_same_history(&a, &b, "after the install");

    // The log goes on on both, with a second compaction; then a restart.
    let more = [
        Command::put("key-0001", "after"),
        Command::Compact {
            revision: a.kv.revision() - 5,
        },
        Command::delete_range("key-0000", "key-0005"),
        Command::put("key-0002", "after"),
    ];
    apply(&mut a, 4, &more);
    apply(&mut b, 4, &more);
    assert_same_history(&a, &b, "after more entries");
    drop(b);
    let b = open(&dir_b, 2);
    assert_same_history(&a, &b, "after a restart");
}
