//! The storage layer's settings: limits and durability switches, each with
//! a default and the reason for it.

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 3 * 512 * 1024;

/// Memtable size of the key-value column families: 4 MiB. Every write of a
/// key adds a version to the memtable, and inserting into a skip list of
/// RocksDB's default 64 MiB (some 200,000 versions of small records) misses
/// the CPU cache at most of its levels. Applying a put reads nothing from
/// RocksDB (the key index in memory answers), so a small memtable costs
/// reads little: point reads go through bloom filters. With the key index,
/// 4 MiB took the three servers of a cluster from 57–61 to 52–54 µs of CPU
/// per put; alone, neither change did (`cargo bench -p konsen-storage
/// --bench apply` compares sizes for one store).
pub const KV_MEMTABLE_BYTES_DEFAULT: usize = 4 * 1024 * 1024;

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
    /// Memtable size of the key-value column families (at least 64 KiB).
    /// Default: [`KV_MEMTABLE_BYTES_DEFAULT`].
    pub kv_memtable_bytes: usize,
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
            kv_memtable_bytes: KV_MEMTABLE_BYTES_DEFAULT,
            txn_ops_max: crate::txn::TXN_OPS_MAX_DEFAULT,
        }
    }
}
