//! What the store refuses, and how it says so: oversized and keyless
//! requests, another node's data dir, and damaged data dirs (which are
//! reported with their path and never reset).

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use konsen_core::storage::Storage;
use konsen_core::{Entry, EntryKind, HardState};
use konsen_storage::{
    Command, NodeIdentity, REQUEST_BYTES_MAX_DEFAULT, RangeRequest, RequestError, RocksStore,
    StorageError, StorageOptions,
};
use tempfile::TempDir;

const IDENTITY: NodeIdentity = NodeIdentity {
    cluster_id: 0xc1,
    node_id: 1,
};

fn open(path: &Path, identity: NodeIdentity) -> Result<RocksStore, StorageError> {
    RocksStore::open(path, identity, StorageOptions::default())
}

/// Opens the store and reads everything in it, as a restarting server does.
fn open_and_read(path: &Path) -> Result<(), StorageError> {
    let store = open(path, IDENTITY)?;
    store.log.load()?;
    store.kv.range(&RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    })?;
    Ok(())
}

/// A data dir with log entries, a hard state and keys, flushed to table
/// files.
fn populated_dir() -> TempDir {
    let dir = TempDir::new().unwrap();
    let RocksStore { mut log, mut kv } = open(dir.path(), IDENTITY).unwrap();
    let entries: Vec<Entry> = (1..=200)
        .map(|index| Entry {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: Command::put(format!("key-{index}"), vec![index as u8; 300]).encode(),
        })
        .collect();
    let hs = HardState {
        term: 1,
        vote: Some(1),
        commit: 200,
    };
    log.append(Some(hs), &entries).unwrap();
    kv.apply(&entries).unwrap();
    RocksStore { log, kv }.flush().unwrap();
    dir
}

fn files_named(dir: &Path, matches: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches(p.file_name().unwrap().to_str().unwrap()))
        .collect();
    found.sort();
    found
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn assert_names_path(err: &StorageError, dir: &Path) {
    let message = err.to_string();
    assert!(
        message.contains(dir.to_str().unwrap()),
        "the error names the data dir {}: {message}",
        dir.display()
    );
}

#[test]
fn oversized_and_keyless_commands_are_rejected() {
    let options = StorageOptions::default();
    assert_eq!(
        options.request_bytes_max,
        1536 * 1024,
        "the default is etcd's 1.5 MiB"
    );
    let at_limit = Command::put("k", vec![0u8; REQUEST_BYTES_MAX_DEFAULT - 1]);
    assert_eq!(at_limit.validate(&options), Ok(()));
    let over = Command::put("k", vec![0u8; REQUEST_BYTES_MAX_DEFAULT]);
    let err = over.validate(&options).unwrap_err();
    assert_eq!(
        err,
        RequestError::TooLarge {
            size: REQUEST_BYTES_MAX_DEFAULT + 1,
            max: REQUEST_BYTES_MAX_DEFAULT
        }
    );
    assert!(err.to_string().contains("request is too large"), "{err}");
    assert!(
        err.to_string().contains("request_bytes_max=1572864"),
        "{err}"
    );
    let tight = StorageOptions {
        request_bytes_max: 8,
        ..StorageOptions::default()
    };
    assert!(matches!(
        Command::delete_range("abcd", "abcz").validate(&tight),
        Ok(())
    ));
    assert!(matches!(
        Command::delete_range("abcde", "abcz").validate(&tight),
        Err(RequestError::TooLarge { size: 9, max: 8 })
    ));
    let keyless = Command::put("", Bytes::from_static(b"v"))
        .validate(&options)
        .unwrap_err();
    assert_eq!(keyless.to_string(), "key is not provided");
}

#[test]
fn another_nodes_data_dir_is_refused() {
    let dir = TempDir::new().unwrap();
    drop(open(dir.path(), IDENTITY).unwrap());
    let other_node = NodeIdentity {
        node_id: 2,
        ..IDENTITY
    };
    let err = open(dir.path(), other_node).unwrap_err();
    assert!(
        matches!(err, StorageError::IdentityMismatch { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("belongs to cluster 0xc1 node 1")
            && message.contains("this node is cluster 0xc1 node 2"),
        "the message names what was found and what was expected: {message}"
    );
    assert_names_path(&err, dir.path());

    let other_cluster = NodeIdentity {
        cluster_id: 0xc2,
        ..IDENTITY
    };
    let message = open(dir.path(), other_cluster).unwrap_err().to_string();
    assert!(
        message.contains("0xc1") && message.contains("0xc2"),
        "{message}"
    );

    assert!(
        open(dir.path(), IDENTITY).is_ok(),
        "the owner still opens its dir"
    );
    let zero = NodeIdentity {
        cluster_id: 0xc1,
        node_id: 0,
    };
    assert!(matches!(
        open(dir.path(), zero),
        Err(StorageError::InvalidIdentity(_))
    ));
}

#[test]
fn a_directory_that_is_not_a_database_is_left_alone() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = open(dir.path(), IDENTITY).unwrap_err();
    assert!(matches!(err, StorageError::NotADataDir { .. }), "{err:?}");
    assert_names_path(&err, dir.path());
    assert_eq!(
        files_named(dir.path(), |_| true),
        vec![dir.path().join("notes.txt")],
        "no database is created in a non-empty directory"
    );
}

#[test]
fn a_database_without_identity_is_refused() {
    let dir = TempDir::new().unwrap();
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let cfs = ["log", "meta", "kv", "kv_alt"];
    drop(rocksdb::DB::open_cf(&options, dir.path(), cfs).unwrap());
    let err = open(dir.path(), IDENTITY).unwrap_err();
    assert!(matches!(err, StorageError::Corruption { .. }), "{err:?}");
    assert!(err.to_string().contains("no node identity"), "{err}");
    assert_names_path(&err, dir.path());
}

#[test]
fn lost_committed_entries_are_reported() {
    let dir = populated_dir();
    let options = rocksdb::Options::default();
    let cfs = ["log", "meta", "kv", "kv_alt", "hist", "hist_alt"];
    let db = rocksdb::DB::open_cf(&options, dir.path(), cfs).unwrap();
    let log_cf = db.cf_handle("log").unwrap();
    db.delete_range_cf(log_cf, 150u64.to_be_bytes(), 201u64.to_be_bytes())
        .unwrap();
    drop(db);
    let err = open(dir.path(), IDENTITY).unwrap_err();
    assert!(
        err.to_string()
            .contains("commits index 200, but the log ends at 149"),
        "{err}"
    );
    assert_names_path(&err, dir.path());
}

#[test]
fn a_new_directory_is_created() {
    let dir = TempDir::new().unwrap();
    let nested = dir.path().join("a").join("b");
    let store = open(&nested, IDENTITY).unwrap();
    assert_eq!(store.path(), nested);
    assert_eq!(store.log.last(), 0);
}

#[test]
fn a_truncated_current_file_is_reported() {
    let dir = populated_dir();
    let current = dir.path().join("CURRENT");
    truncate(&current, 0);
    let err = open(dir.path(), IDENTITY).unwrap_err();
    assert_names_path(&err, dir.path());
    assert_eq!(
        fs::metadata(&current).unwrap().len(),
        0,
        "CURRENT is not rewritten"
    );
}

/// RocksDB takes a MANIFEST cut short for one whose last write was torn by
/// a crash, and opens the database without the files the lost records
/// named. konsen's own checks at open (identity present, commit and applied
/// index within the log) turn that into an error.
#[test]
fn a_truncated_manifest_is_reported_or_recovered_in_full() {
    let dir = populated_dir();
    let manifests = files_named(dir.path(), |name| name.starts_with("MANIFEST-"));
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let len = fs::metadata(&manifests[0]).unwrap().len();
    truncate(&manifests[0], len / 2);
    // Cut back to before the flush, the manifest names the first WAL file
    // as the one to replay. RocksDB keeps that file, obsolete but intact,
    // for reuse (WAL recycling), and then recovers everything from it;
    // without it the store comes up empty, and the missing identity gets
    // it refused. Either is fine; a store that opens with less than what
    // was written is not.
    match open(dir.path(), IDENTITY) {
        Err(err) => assert_names_path(&err, dir.path()),
        Ok(store) => {
            let stored = store.log.load().unwrap();
            assert_eq!(stored.hard_state.commit, 200);
            assert_eq!(store.log.last(), 200);
            assert_eq!(store.kv.applied_index(), 200);
            assert_eq!(store.kv.revision(), 201);
        }
    }
}

#[test]
fn a_truncated_table_file_is_reported() {
    let dir = populated_dir();
    let tables = files_named(dir.path(), |name| name.ends_with(".sst"));
    assert!(!tables.is_empty(), "flush wrote table files");
    for table in &tables {
        let len = fs::metadata(table).unwrap().len();
        truncate(table, len - 100);
    }
    let err = open_and_read(dir.path()).unwrap_err();
    assert_names_path(&err, dir.path());
}

#[test]
fn overwritten_bytes_in_a_table_file_are_reported() {
    let dir = populated_dir();
    let tables = files_named(dir.path(), |name| name.ends_with(".sst"));
    assert!(!tables.is_empty(), "flush wrote table files");
    for table in &tables {
        let len = fs::metadata(table).unwrap().len();
        let mut file = OpenOptions::new().write(true).open(table).unwrap();
        file.seek(SeekFrom::Start(len / 3)).unwrap();
        file.write_all(&[0xa5; 64]).unwrap();
    }
    let err = open_and_read(dir.path()).unwrap_err();
    assert!(matches!(err, StorageError::Corruption { .. }), "{err:?}");
    assert_names_path(&err, dir.path());
}
