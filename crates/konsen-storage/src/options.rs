//! The storage layer's settings: limits and durability switches, each with
//! a default and the reason for it.

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 3 * 512 * 1024;

/// Memtable size of the history column families, which hold the state:
/// 16 MiB. The history is written in revision order, so an insert lands at
/// the end of the memtable's skip list whatever its size (the 4 MiB chosen
/// for the earlier `kv` column family, keyed by user key, was for its
/// random-order inserts). A larger one holds more of the versions that
/// auto-compaction deletes, which then die in the flush instead of being
/// carried into RocksDB's compactions: at 1000 clients, 4 → 16 MiB took
/// RocksDB's compaction threads from 1.45–1.77 to 1.02–1.15 µs of CPU per
/// put and puts from 57.4–59.6k to 60.3–61.2k a second (three alternating
/// runs; docs/performance.md, "What the history costs a put").
pub const HIST_MEMTABLE_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

/// Settings of a [`crate::RocksStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// The most bytes of key and value (key and range end for a delete) one
    /// command may carry. Checked by [`crate::Command::validate`] before a
    /// command is proposed, so that one request cannot stall replication or
    /// blow up a follower's memory. Default: 1.5 MiB, like etcd.
    pub request_bytes_max: usize,
    /// Skip the fsync when appending to the log. A crash of the machine (not
    /// only of the process) may then lose entries and votes this node has
    /// acknowledged, which breaks Raft's safety. For benchmarks and
    /// throw-away test clusters only; `open` logs a warning when it is set.
    /// Default: false.
    pub unsafe_no_fsync: bool,
    /// Memtable size of the history column families (at least 64 KiB).
    /// Default: [`HIST_MEMTABLE_BYTES_DEFAULT`].
    pub hist_memtable_bytes: usize,
    /// The most compares, and the most operations in each branch, of one
    /// txn (etcd's `--max-txn-ops`). Checked before a txn is proposed.
    /// Default: [`crate::TXN_OPS_MAX_DEFAULT`] (128, like etcd).
    pub txn_ops_max: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            unsafe_no_fsync: false,
            hist_memtable_bytes: HIST_MEMTABLE_BYTES_DEFAULT,
            txn_ops_max: crate::txn::TXN_OPS_MAX_DEFAULT,
        }
    }
}
