//! Data dirs of the earlier layouts are converted on open:
//!
//! * written before history was kept (no `hist`/`hist_alt` column
//!   families, no compacted revision): the dir gets its history; its
//!   current revision becomes the compacted one, so older revisions read as
//!   compacted, and the history grows from there;
//! * with the history keyed by user key first: rewritten revision first;
//! * with each key's current record in `kv` beside the history: checked
//!   against the history, which becomes the only copy.

mod support;

use bytes::Bytes;
use konsen_storage::{
    Command, NodeIdentity, RangeRequest, RequestError, RocksStore, StorageError, StorageOptions,
};
use tempfile::TempDir;

const IDENTITY: NodeIdentity = NodeIdentity {
    cluster_id: 0xc1,
    node_id: 1,
};

fn open(dir: &TempDir, identity: NodeIdentity) -> Result<RocksStore, StorageError> {
    RocksStore::open(dir.path(), identity, StorageOptions::default())
}

fn apply(store: &mut RocksStore, commands: &[Command]) {
    support::apply_committed(store, 1, commands);
}

fn everything_at(revision: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..RangeRequest::default()
    }
}

fn values_at(store: &RocksStore, revision: i64) -> Result<Vec<(Vec<u8>, Bytes)>, StorageError> {
    Ok(store
        .kv
        .range(&everything_at(revision))?
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect())
}

fn pair(key: &str, value: &str) -> (Vec<u8>, Bytes) {
    (key.into(), Bytes::copy_from_slice(value.as_bytes()))
}

/// The data dir's RocksDB database itself, every column family open, to
/// write what an older konsen would have left.
fn open_raw(dir: &TempDir) -> rocksdb::DB {
    let cfs = ["log", "meta", "kv", "kv_alt", "hist", "hist_alt"];
    rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap()
}

/// Writes into `kv` each live key's latest version from `hist`, as the
/// builds before the history-only layout kept them, and drops the layout
/// marker (the caller sets the one it wants).
fn write_current_records(db: &rocksdb::DB) {
    let hist = db.cf_handle("hist").unwrap();
    let mut current = std::collections::BTreeMap::new();
    for item in db.iterator_cf(hist, rocksdb::IteratorMode::Start) {
        let (raw, value) = item.unwrap();
        let key = raw[8..].to_vec();
        if value.is_empty() {
            current.remove(&key);
        } else {
            current.insert(key, value);
        }
    }
    let kv = db.cf_handle("kv").unwrap();
    for (key, value) in current {
        db.put_cf(kv, key, value).unwrap();
    }
    db.delete_cf(db.cf_handle("meta").unwrap(), b"hist_layout")
        .unwrap();
}

/// A data dir as a konsen from before history left it, at revision 4:
/// this version's dir with the current records in `kv`, and without the
/// history column families, the compacted revision and the layout marker
/// (the other records did not change).
fn dir_from_before_history() -> TempDir {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir, IDENTITY).unwrap();
    apply(
        &mut store,
        &[
            Command::put("a", "1"),
            Command::put("b", "1"),
            Command::put("a", "2"),
        ],
    );
    assert_eq!(store.kv.revision(), 4);
    drop(store);
    let mut db = open_raw(&dir);
    write_current_records(&db);
    let meta = db.cf_handle("meta").unwrap();
    db.delete_cf(meta, b"kv_compacted").unwrap();
    db.drop_cf("hist").unwrap();
    db.drop_cf("hist_alt").unwrap();
    drop(db);
    dir
}

/// What a migrated dir must answer.
fn assert_migrated(store: &mut RocksStore) {
    assert_eq!(store.kv.revision(), 4);
    assert_eq!(store.kv.compacted_revision(), 4, "the compacted revision");
    assert_eq!(
        values_at(store, 4).unwrap(),
        vec![pair("a", "2"), pair("b", "1")]
    );
    let err = values_at(store, 3).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Request(RequestError::Compacted {
                requested: 3,
                compacted: 4
            })
        ),
        "revisions before the history read as compacted: {err:?}"
    );
    apply(store, &[Command::put("c", "1"), Command::put("a", "3")]);
    assert_eq!(
        values_at(store, 4).unwrap(),
        vec![pair("a", "2"), pair("b", "1")]
    );
    assert_eq!(
        values_at(store, 5).unwrap(),
        vec![pair("a", "2"), pair("b", "1"), pair("c", "1")]
    );
}

#[test]
fn a_dir_from_before_history_is_migrated() {
    let dir = dir_from_before_history();
    let mut store = open(&dir, IDENTITY).unwrap();
    assert_migrated(&mut store);
    drop(store);
    let store = open(&dir, IDENTITY).unwrap();
    assert_eq!(store.kv.compacted_revision(), 4);
    assert_eq!(
        values_at(&store, 6).unwrap(),
        vec![pair("a", "3"), pair("b", "1"), pair("c", "1")]
    );
}

/// The history column families are created when the database is opened,
/// and the migration runs later, in `KvStore::open`. An open that fails in
/// between (here: the wrong node identity, refused as it should be; or a
/// kill at that moment) leaves them created and empty; the next open must
/// still migrate (a regression test: it used to skip the migration for
/// good, and read nothing at revision 3, where `a` and `b` existed,
/// instead of `Compacted`).
#[test]
fn a_failed_first_open_does_not_skip_the_migration() {
    let dir = dir_from_before_history();
    let other = NodeIdentity {
        node_id: 2,
        ..IDENTITY
    };
    let err = open(&dir, other).unwrap_err();
    assert!(
        matches!(err, StorageError::IdentityMismatch { .. }),
        "{err:?}"
    );
    let mut store = open(&dir, IDENTITY).unwrap();
    assert_migrated(&mut store);
}

/// A revision and every key's value at it.
type StateAt = (i64, Vec<(Vec<u8>, Bytes)>);

/// Every revision's full state, from the compacted one to the current.
fn every_revision(store: &RocksStore) -> Vec<StateAt> {
    (store.kv.compacted_revision()..=store.kv.revision())
        .map(|rev| (rev, values_at(store, rev).unwrap()))
        .collect()
}

/// The key of the first history layout (2e7eaf8 to 631b33d): the user key
/// with each 0x00 byte as 0x00 0xff, ended by 0x00 0x00, then the
/// revision, big-endian.
fn key_first(key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&revision.to_be_bytes());
    out
}

/// A dir whose history is keyed by user key first is rewritten on open
/// and reads the same at every revision.
#[test]
fn a_dir_with_key_first_history_is_converted() {
    let (dir, before) = dir_with_history();
    assert_eq!(before.len(), 7, "revisions 3 to 9: {before:?}");

    let db = open_raw(&dir);
    write_current_records(&db);
    let hist = db.cf_handle("hist").unwrap();
    let records: Vec<_> = db
        .iterator_cf(hist, rocksdb::IteratorMode::Start)
        .map(Result::unwrap)
        .collect();
    assert!(records.len() >= 5, "{} history records", records.len());
    for (raw, value) in &records {
        let (rev, key) = raw.split_at(8);
        let rev = i64::from_be_bytes(rev.try_into().unwrap());
        db.delete_cf(hist, raw).unwrap();
        db.put_cf(hist, key_first(key, rev), value).unwrap();
    }
    drop(db);

    let mut store = open(&dir, IDENTITY).unwrap();
    assert_eq!(every_revision(&store), before);
    apply(&mut store, &[Command::put("a\0b", "3")]);
    drop(store);
    let store = open(&dir, IDENTITY).unwrap();
    assert_eq!(every_revision(&store)[..before.len()], before[..]);
    assert_eq!(
        values_at(&store, 10).unwrap(),
        vec![pair("a", "3"), pair("a\0b", "3"), pair("c", "1")]
    );
}

#[test]
fn an_unknown_history_layout_is_refused() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir, IDENTITY).unwrap();
    apply(&mut store, &[Command::put("a", "1")]);
    drop(store);
    let db = open_raw(&dir);
    db.put_cf(db.cf_handle("meta").unwrap(), b"hist_layout", [9])
        .unwrap();
    drop(db);
    let err = open(&dir, IDENTITY).unwrap_err().to_string();
    assert!(err.contains("unknown history layout"), "{err}");
}

/// A dir at revision 9 with some history: `a` at 2, 5 and 9, `a\0b` at 3
/// and 8, `b` put at 4 and deleted at 6, `c` at 7, compacted at 3.
fn dir_with_history() -> (TempDir, Vec<StateAt>) {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir, IDENTITY).unwrap();
    apply(
        &mut store,
        &[
            Command::put("a", "1"),
            Command::put("a\0b", "1"),
            Command::put("b", "1"),
            Command::put("a", "2"),
            Command::delete_range("b", ""),
            Command::put("c", "1"),
            Command::Compact { revision: 3 },
            Command::put("a\0b", "2"),
            Command::put("a", "3"),
        ],
    );
    let states = every_revision(&store);
    (dir, states)
}

/// Whether the dir's `kv` column family holds anything.
fn kv_is_empty(dir: &TempDir) -> bool {
    let db = open_raw(dir);
    let kv = db.cf_handle("kv").unwrap();
    db.iterator_cf(kv, rocksdb::IteratorMode::Start)
        .next()
        .is_none()
}

/// A dir of the builds that kept each key's current record in `kv` beside
/// the history (layout 2) reads the same at every revision once the
/// history is its only copy, and `kv` is emptied.
#[test]
fn a_dir_with_current_records_beside_the_history_is_converted() {
    let (dir, before) = dir_with_history();
    assert!(kv_is_empty(&dir), "this build writes nothing into kv");
    let db = open_raw(&dir);
    write_current_records(&db);
    db.put_cf(db.cf_handle("meta").unwrap(), b"hist_layout", [2])
        .unwrap();
    drop(db);
    assert!(!kv_is_empty(&dir));

    let mut store = open(&dir, IDENTITY).unwrap();
    assert_eq!(every_revision(&store), before);
    apply(&mut store, &[Command::put("b", "2")]);
    drop(store);
    assert!(kv_is_empty(&dir), "the current records are cleared");
    let store = open(&dir, IDENTITY).unwrap();
    assert_eq!(every_revision(&store)[..before.len()], before[..]);
    assert_eq!(
        values_at(&store, 10).unwrap(),
        vec![
            pair("a", "3"),
            pair("a\0b", "2"),
            pair("b", "2"),
            pair("c", "1")
        ]
    );
}

/// If a current record of a layout-2 dir differs from its key's latest
/// version in the history, or the history has a live key that `kv` lacks,
/// the dir is refused and left as it was: converting it would lose or
/// change the state.
#[test]
fn a_history_that_differs_from_the_current_records_is_refused() {
    for (key, value) in [("c", Some("changed")), ("c", None), ("d", Some("extra"))] {
        let (dir, _) = dir_with_history();
        let db = open_raw(&dir);
        write_current_records(&db);
        let kv = db.cf_handle("kv").unwrap();
        let record = db.get_cf(kv, "a").unwrap().unwrap();
        match value {
            // The record of `a`, under another key: its key or value are
            // not the history's.
            Some(_) => db.put_cf(kv, key, &record).unwrap(),
            None => db.delete_cf(kv, key).unwrap(),
        }
        db.put_cf(db.cf_handle("meta").unwrap(), b"hist_layout", [2])
            .unwrap();
        drop(db);
        let err = open(&dir, IDENTITY).unwrap_err().to_string();
        assert!(
            err.contains("the history does not hold the current state"),
            "{key} {value:?}: {err}"
        );
        assert!(!kv_is_empty(&dir), "{key} {value:?}: nothing was cleared");
    }
}

/// The raw history records of the dir, as (revision, user key) → value.
fn raw_history(dir: &TempDir) -> std::collections::BTreeMap<(i64, Vec<u8>), Vec<u8>> {
    let db = open_raw(dir);
    let hist = db.cf_handle("hist").unwrap();
    db.iterator_cf(hist, rocksdb::IteratorMode::Start)
        .map(Result::unwrap)
        .map(|(raw, value)| {
            let (rev, key) = raw.split_at(8);
            let rev = i64::from_be_bytes(rev.try_into().unwrap());
            ((rev, key.to_vec()), value.to_vec())
        })
        .collect()
}

/// A compaction's records are deleted beside the apply (`deleter.rs`);
/// those a crash left behind are found and deleted when the store opens,
/// and never read: reads at every revision since the compaction are
/// unchanged, and `b`, deleted before the compaction, stays deleted.
#[test]
fn records_a_compaction_left_on_disk_are_deleted_on_open() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir, IDENTITY).unwrap();
    // a@2, b@3, b deleted @4, a@5, c@6.
    apply(
        &mut store,
        &[
            Command::put("a", "1"),
            Command::put("b", "1"),
            Command::delete_range("b", ""),
            Command::put("a", "2"),
            Command::put("c", "1"),
        ],
    );
    drop(store);
    let all = raw_history(&dir);
    assert_eq!(all.len(), 5);

    let mut store = open(&dir, IDENTITY).unwrap();
    apply(&mut store, &[Command::Compact { revision: 5 }]);
    let before = every_revision(&store);
    assert_eq!(before.len(), 2, "revisions 5 and 6: {before:?}");
    store.kv.reader().wait_for_compaction();
    drop(store);
    let kept = raw_history(&dir);
    let dropped = [(2, b"a".to_vec()), (3, b"b".to_vec()), (4, b"b".to_vec())];
    for version in &dropped {
        assert!(!kept.contains_key(version), "{version:?} deleted: {kept:?}");
    }
    assert_eq!(kept.len(), 2);

    // A crash while the deleter worked, oldest first, leaves the newest
    // dropped versions: `a`@2 (older than its kept version) and `b`'s
    // delete @4.
    let db = open_raw(&dir);
    let hist = db.cf_handle("hist").unwrap();
    for (rev, key) in [(2i64, b"a".to_vec()), (4, b"b".to_vec())] {
        let mut raw = rev.to_be_bytes().to_vec();
        raw.extend_from_slice(&key);
        db.put_cf(hist, raw, &all[&(rev, key)]).unwrap();
    }
    drop(db);
    assert_eq!(raw_history(&dir).len(), 4);

    let store = open(&dir, IDENTITY).unwrap();
    assert_eq!(every_revision(&store), before);
    assert_eq!(
        values_at(&store, 6).unwrap(),
        vec![pair("a", "2"), pair("c", "1")]
    );
    store.kv.reader().wait_for_compaction();
    drop(store);
    assert_eq!(raw_history(&dir), kept, "the leftovers are deleted");
}
