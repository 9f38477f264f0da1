//! The storage layer's settings: limits and durability switches, each with
//! a default and the reason for it.

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 3 * 512 * 1024;

/// Memtable size of the key-value column families: RocksDB's default,
/// 64 MiB. Every write of a key adds a version to the memtable, and each
/// apply searches it for the key's previous record, so a smaller memtable
/// looked like a saving (the skip-list search is the largest single item
/// of a leader's CPU profile under writes). Measured, it is not: 4, 16 and
/// 64 MiB apply and read within 15 % of each other, in either order
/// (`cargo bench -p konsen-storage --bench apply`), and a 3-node cluster's
/// CPU per put did not move either.
pub const KV_MEMTABLE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

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
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            unsafe_no_fsync: false,
            kv_memtable_bytes: KV_MEMTABLE_BYTES_DEFAULT,
        }
    }
}
