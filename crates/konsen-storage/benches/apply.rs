//! Benchmark of the state machine: applying puts (as a node does after
//! appending them to the log) and reading single keys back, for several
//! memtable sizes of the history column families, so the cost of the
//! memtable search can be read off directly.
//!
//! Each row opens a fresh store (log appends unsynced: this measures CPU,
//! not the disk), applies `KONSEN_BENCH_PUTS` puts (default 300,000) of
//! 256-byte values over 10,000 keys in batches of 64 entries, then does
//! 200,000 single-key reads through a `KvReader` (as a serializable read
//! does).
//!
//! Run with `cargo bench -p konsen-storage --bench apply`; set
//! `KONSEN_BENCH_DIR` to put the stores elsewhere (default /var/tmp).

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use konsen_core::storage::Storage;
use konsen_core::{Entry, EntryKind, HardState, Index};
use konsen_storage::{Command, NodeIdentity, RangeRequest, RocksStore, StorageOptions};

const KEY_SPACE: u64 = 10_000;
const VALUE_BYTES: usize = 256;
const BATCH: u64 = 64;
const READS: u64 = 200_000;
const MEMTABLE_SIZES_MIB: [usize; 3] = [4, 16, 64];

/// A fixed pseudo-random key sequence (the same for every row).
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> Vec<u8> {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let n = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % KEY_SPACE;
        format!("{n:08}").into_bytes()
    }
}

fn row(dir: &Path, memtable_mib: usize, puts: u64) {
    let path = dir.join(format!("apply-{memtable_mib}"));
    let options = StorageOptions {
        unsafe_no_fsync: true,
        hist_memtable_bytes: memtable_mib * 1024 * 1024,
        ..StorageOptions::default()
    };
    let identity = NodeIdentity {
        cluster_id: 1,
        node_id: 1,
    };
    let mut store = RocksStore::open(&path, identity, options).expect("open store");
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let mut keys = Keys(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut next: Index = 1;
    while next <= puts {
        let entries: Vec<Entry> = (next..(next + BATCH).min(puts + 1))
            .map(|index| Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: Command::put(keys.next(), value.clone()).encode(),
            })
            .collect();
        next += entries.len() as Index;
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: next - 1,
        };
        store.log.append(Some(hs), &entries).expect("append");
        store.kv.apply(&entries).expect("apply");
    }
    let apply_secs = started.elapsed().as_secs_f64();
    let reader = store.kv.reader();
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..READS {
        let request = RangeRequest {
            key: keys.next(),
            ..RangeRequest::default()
        };
        found += reader.range(&request).expect("read").kvs.len();
    }
    let read_secs = started.elapsed().as_secs_f64();
    assert!(found > 0, "the reads found none of the keys written");
    println!(
        "| {:>8} MiB | {:>12.0} | {:>10.2} | {:>12.0} | {:>9.2} |",
        memtable_mib,
        puts as f64 / apply_secs,
        apply_secs * 1e6 / puts as f64,
        READS as f64 / read_secs,
        read_secs * 1e6 / READS as f64,
    );
    drop(store);
    std::fs::remove_dir_all(&path).expect("remove bench store");
}

fn main() {
    let base = std::env::var("KONSEN_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".to_string());
    let puts = std::env::var("KONSEN_BENCH_PUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let dir = tempfile::Builder::new()
        .prefix("konsen-bench-apply-")
        .tempdir_in(&base)
        .expect("bench dir");
    println!(
        "{puts} puts over {KEY_SPACE} keys ({VALUE_BYTES}-byte values, batches of {BATCH}), then {READS} single-key reads"
    );
    println!("| memtable    | applied/s    | µs/put     | reads/s      | µs/read   |");
    println!("| -----------:| ------------:| ----------:| ------------:| ---------:|");
    for mib in MEMTABLE_SIZES_MIB {
        row(dir.path(), mib, puts);
    }
}
