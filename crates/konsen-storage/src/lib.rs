//! konsen-storage: a node's durable state on RocksDB: the Raft log, the
//! hard state, the node's identity, and the key-value state machine.
//!
//! This is the only crate that touches the disk. The server opens a data
//! dir with [`RocksStore::open`], restarts the core from
//! [`LogStore`]'s `load()` (a [`konsen_core::storage::StoredLog`]) and
//! [`KvStore::applied_index`], then for each `Ready` appends to the
//! [`LogStore`] (the core's [`konsen_core::storage::Storage`] trait) and
//! applies committed entries to the [`KvStore`].
//!
//! # Layout
//!
//! One RocksDB database per node, with these column families:
//!
//! | column family | key                        | value                                              |
//! |---------------|----------------------------|----------------------------------------------------|
//! | `log`         | index, `u64` big-endian    | entry: version, kind, term, data                   |
//! | `meta`        | `identity`                 | version, cluster id, node id                       |
//! | `meta`        | `hard_state`               | version, term, vote, commit                        |
//! | `meta`        | `purged`                   | version, last purged index and its term            |
//! | `meta`        | `kv_state`                 | version, applied index, revision                   |
//! | `meta`        | `kv_cf`                    | version, which of `kv`/`kv_alt` is in use          |
//! | `meta`        | `kv_compacted`             | version, the compacted revision                    |
//! | `meta`        | `hist_layout`              | the layout of the state (`db.rs`)                  |
//! | `meta`        | `lease/` + id, `i64` big-endian | version, the lease's TTL (`lease.rs`)         |
//! | `kv`, `kv_alt`| empty (earlier layouts: the user's key) | (earlier layouts: the key's record)   |
//! | `hist`, `hist_alt` | revision `i64` big-endian, then the user's key | the key's record at that revision (version, create/mod revision, version, lease, value); empty: deleted |
//!
//! Big-endian index keys make RocksDB's byte order the log's order, so a
//! suffix or prefix of the log is one `delete_range`. Every value starts
//! with a format version byte (see `codec.rs`); log entry payloads are
//! [`Command`]s with their own versioned format (see `command.rs`).
//!
//! # Durability rules
//!
//! * **The log is synced before `append` returns.** A `Ready`'s hard state
//!   and entries go into one `WriteBatch`, written with `sync` on: a vote, a
//!   term or an entry is on disk before the node acts on it, and one fsync
//!   covers the whole batch (group commit). Only
//!   [`StorageOptions::unsafe_no_fsync`] turns this (and every other sync
//!   below except the identity record's) off.
//! * **The applied index is written with the data it produced.** A batch
//!   of committed entries, the new applied index and the new revision are
//!   one `WriteBatch`, so the state machine on disk is always the log
//!   applied up to its applied index. That write is not synced: the entries
//!   are in the synced log, and after a crash they are applied again from
//!   the recorded applied index (never twice: entries at or below it are
//!   skipped).
//! * **The log is purged only behind a durable state machine.** A purge
//!   is a synced write; the key-value writes of the purged entries went to
//!   the same write-ahead log before it, so they are durable first. The
//!   caller purges only applied entries (the core's `compact` refuses
//!   anything else); `LogStore::purge` itself does not know the applied
//!   index.
//! * **A compaction's records are deleted after it.** The `Compact` entry's
//!   batch stores the compacted revision; the records it drops, which no
//!   read can reach from then on, are deleted by a thread beside the node
//!   loop, oldest first, and what a crash leaves of them is found again on
//!   open (see `deleter.rs`).
//! * **A snapshot is installed all at once.** It is received into the
//!   history column family not in use and switched in with one synced
//!   batch (see `snapshot.rs`).
//! * **Damage is reported, never repaired.** The database is opened with
//!   paranoid checks and read with checksum verification; a new database is
//!   created only in a missing or empty directory; a data dir of another
//!   cluster or node is refused. Each of these errors names the path.
//!
//! # Files
//!
//! * `store.rs`: opening a data dir, the identity check, [`RocksStore`].
//! * `db.rs`: RocksDB options, column families, keys, read/write helpers.
//! * `log.rs`: [`LogStore`], the Raft log.
//! * `kv.rs`: [`KvStore`] and applying entries; `range.rs`: reads.
//! * `lease.rs`: the leases and the keys attached to them.
//! * `txn.rs`: [`Txn`], its checks and evaluation; `history.rs`: the
//!   versions kept for reads at old revisions, and compaction.
//! * `snapshot.rs`: reading, receiving and installing snapshots.
//! * `command.rs`: [`Command`], the log entry payload.
//! * `codec.rs`: the on-disk record formats.
//! * `options.rs`, `error.rs`: settings and errors.

mod changes;
mod codec;
mod command;
mod db;
mod deleter;
mod error;
mod history;
mod index;
mod kv;
mod lease;
mod log;
mod options;
mod range;
mod shared;
mod snapshot;
mod store;
mod txn;

pub use changes::{CHANGES_SCAN_MAX, ChangesRead};
pub use command::Command;
pub use error::{DecodeError, RequestError, StorageError};
pub use history::Version as Change;
pub use kv::{
    ApplyOutcome, ApplyResult, CompactResult, DeleteRangeResult, KeyValue, KvStore,
    LeaseGrantResult, LeaseRevokeResult, PutResult, REVISION_INITIAL,
};
pub use lease::{LEASE_TTL_MAX, LeaseTable};
pub use log::LogStore;
pub use options::{HIST_MEMTABLE_BYTES_DEFAULT, REQUEST_BYTES_MAX_DEFAULT, StorageOptions};
pub use range::{KeyRange, KvReader, RangeRequest, RangeResponse, SortOrder, SortTarget};
pub use snapshot::{
    Receiving, SnapshotHeader, SnapshotStats, Snapshots, StagedSnapshot, install_snapshot,
};
pub use store::{NodeIdentity, RocksStore};
pub use txn::{
    Compare, CompareResult, CompareTarget, TXN_DEPTH_MAX, TXN_OPS_MAX_DEFAULT, Txn, TxnOp,
    TxnResponse, TxnResult,
};
