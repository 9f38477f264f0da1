//! The RocksDB log against the core's storage contract (the same suite
//! `MemStorage` passes), and what survives closing and reopening it.

use bytes::Bytes;
use konsen_core::storage::{Storage, StoredLog, conformance};
use konsen_core::{Entry, EntryKind, HardState, Index, Term};
use konsen_storage::{LogStore, NodeIdentity, RocksStore, StorageError, StorageOptions};
use tempfile::TempDir;

const IDENTITY: NodeIdentity = NodeIdentity {
    cluster_id: 0xc1,
    node_id: 1,
};

fn open_log(dir: &TempDir, options: StorageOptions) -> LogStore {
    RocksStore::open(dir.path(), IDENTITY, options)
        .expect("open store")
        .log
}

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("{index}@{term}")),
    }
}

fn entries(lo: Index, hi: Index, term: Term) -> Vec<Entry> {
    (lo..=hi).map(|i| entry(i, term)).collect()
}

#[test]
fn rocks_log_passes_the_conformance_suite() {
    let mut dirs = Vec::new();
    conformance::run_all(|| {
        let dir = TempDir::new().expect("tempdir");
        let log = open_log(&dir, StorageOptions::default());
        dirs.push(dir);
        log
    });
}

/// Runs a history of appends, truncations and purges, then checks that a
/// reopened store loads exactly what the open one did.
fn survives_reopen(options: StorageOptions) {
    let dir = TempDir::new().unwrap();
    let mut log = open_log(&dir, options.clone());
    let hs = HardState {
        term: 3,
        vote: Some(2),
        commit: 6,
    };
    log.append(Some(HardState::default()), &entries(1, 8, 1))
        .unwrap();
    log.append(None, &entries(7, 9, 2)).unwrap();
    log.purge(3).unwrap();
    log.append(Some(hs), &entries(10, 12, 3)).unwrap();
    log.append(None, &entries(12, 12, 3)).unwrap();
    let before = log.load().unwrap();
    let mut expected = entries(4, 6, 1);
    expected.extend(entries(7, 9, 2));
    expected.extend(entries(10, 12, 3));
    assert_eq!(
        before,
        StoredLog {
            hard_state: hs,
            purged_index: 3,
            purged_term: 1,
            entries: expected
        }
    );
    drop(log);

    let log = open_log(&dir, options);
    assert_eq!(
        log.load().unwrap(),
        before,
        "a reopened store loads what was appended"
    );
    assert_eq!((log.first(), log.last()), (4, 12));
    assert_eq!(log.entries(9, 10).unwrap(), vec![entry(9, 2), entry(10, 3)]);
}

#[test]
fn log_survives_reopen() {
    survives_reopen(StorageOptions::default());
}

#[test]
fn log_survives_reopen_without_fsync() {
    survives_reopen(StorageOptions {
        unsafe_no_fsync: true,
        ..StorageOptions::default()
    });
}

#[test]
fn misuse_is_reported_with_the_log_bounds() {
    let dir = TempDir::new().unwrap();
    let mut log = open_log(&dir, StorageOptions::default());
    log.append(None, &entries(1, 3, 1)).unwrap();
    let gap = log.append(None, &entries(5, 5, 1)).unwrap_err();
    assert!(
        matches!(
            gap,
            StorageError::NotContiguous {
                purged: 0,
                last: 3,
                first: 5
            }
        ),
        "{gap:?}"
    );
    let outside = log.entries(2, 4).unwrap_err();
    assert_eq!(
        outside.to_string(),
        "range [2, 4] is outside the stored log [1, 3]"
    );
}
