//! Benchmark of synced log appends: entries/s and syncs/s at batch sizes 1,
//! 16 and 256 (256-byte payloads), next to the raw fdatasync rate of the
//! same disk measured in the same run, so the numbers can be read as "how
//! close to the disk's limit is the log".
//!
//! Run with `cargo bench -p konsen-storage --bench append`. Set
//! `KONSEN_BENCH_SECS` to change the time per measurement (default 3) and
//! `KONSEN_BENCH_DIR` to measure another disk (default /var/tmp).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use konsen_core::storage::Storage;
use konsen_core::{Entry, EntryKind, HardState};
use konsen_storage::{NodeIdentity, RocksStore, StorageOptions};

const PAYLOAD_BYTES: usize = 256;
const BATCH_SIZES: [u64; 3] = [1, 16, 256];
const RAW_WRITE_BYTES: usize = 4096;

struct Row {
    name: String,
    syncs: u64,
    entries: u64,
    elapsed: Duration,
}

impl Row {
    fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        let syncs_per_s = self.syncs as f64 / secs;
        let entries = if self.entries == 0 {
            "-".to_string()
        } else {
            format!("{:.0}", self.entries as f64 / secs)
        };
        let mib_per_s = if self.entries == 0 {
            "-".to_string()
        } else {
            let bytes = self.entries as f64 * PAYLOAD_BYTES as f64;
            format!("{:.2}", bytes / secs / (1024.0 * 1024.0))
        };
        let latency_us = secs * 1e6 / self.syncs as f64;
        println!(
            "| {:<28} | {:>10.0} | {:>11} | {:>13} | {:>12.0} |",
            self.name, syncs_per_s, entries, mib_per_s, latency_us
        );
    }
}

/// Writes 4 KiB and `sync_data` (fdatasync) in a loop: the disk's limit.
fn raw_fdatasync(dir: &Path, duration: Duration) -> Row {
    let path = dir.join("raw-fdatasync");
    let mut file = File::create(&path).expect("create raw file");
    let block = vec![0x5a; RAW_WRITE_BYTES];
    let started = Instant::now();
    let mut syncs = 0;
    while started.elapsed() < duration {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        syncs += 1;
    }
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(&path).expect("remove raw file");
    Row {
        name: "raw write 4 KiB + fdatasync".to_string(),
        syncs,
        entries: 0,
        elapsed,
    }
}

/// Appends batches of `batch` entries (with a hard state, as a `Ready`
/// carries) to a fresh store for `duration`.
fn synced_appends(dir: &Path, batch: u64, duration: Duration) -> Row {
    let identity = NodeIdentity {
        cluster_id: 1,
        node_id: 1,
    };
    let path = dir.join(format!("append-{batch}"));
    let mut log = RocksStore::open(&path, identity, StorageOptions::default())
        .expect("open store")
        .log;
    let payload = Bytes::from(vec![0x42; PAYLOAD_BYTES]);
    let started = Instant::now();
    let (mut syncs, mut next) = (0, 1);
    while started.elapsed() < duration {
        let entries: Vec<Entry> = (next..next + batch)
            .map(|index| Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: payload.clone(),
            })
            .collect();
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: next - 1,
        };
        log.append(Some(hs), &entries).expect("append");
        next += batch;
        syncs += 1;
    }
    let elapsed = started.elapsed();
    drop(log);
    std::fs::remove_dir_all(&path).expect("remove store");
    Row {
        name: format!("log append, batch {batch}"),
        syncs,
        entries: next - 1,
        elapsed,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness-less benchmark has no
    // options of its own.
    let secs = std::env::var("KONSEN_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(secs);
    let base = std::env::var("KONSEN_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".to_string());
    let dir = tempfile::Builder::new()
        .prefix("konsen-bench-append-")
        .tempdir_in(&base)
        .expect("temp dir for the benchmark");
    println!(
        "synced appends, {PAYLOAD_BYTES}-byte payloads, {secs}s per row, in {}",
        dir.path().display()
    );
    println!();
    println!(
        "| {:<28} | {:>10} | {:>11} | {:>13} | {:>12} |",
        "what", "syncs/s", "entries/s", "payload MiB/s", "µs per sync"
    );
    println!(
        "|{:-<30}|{:->12}|{:->13}|{:->15}|{:->14}|",
        "", "", "", "", ""
    );
    raw_fdatasync(dir.path(), duration).print();
    for batch in BATCH_SIZES {
        synced_appends(dir.path(), batch, duration).print();
    }
}
