//! The errors of the storage layer.
//!
//! Three kinds, kept apart because callers treat them differently:
//!
//! * [`StorageError`]: the disk or the data dir is not usable (I/O, RocksDB,
//!   corruption, a data dir of another node) or the caller broke the log's
//!   contract. The server stops or reports the node unhealthy.
//! * [`RequestError`]: a client's request is invalid (too large, empty key,
//!   a revision we cannot serve). The server answers the client with it;
//!   the store is fine.
//! * [`DecodeError`]: bytes that do not parse as the record they should be.
//!   Read back from disk it becomes [`StorageError::Corruption`]; in a log
//!   entry's payload it becomes a [`RequestError::Decode`] for that entry.

use std::path::PathBuf;

use konsen_core::{Index, NodeId, Term};

use crate::store::NodeIdentity;

/// Why the store could not do what was asked. Every variant about the data
/// dir names its path, so an operator knows which disk to look at.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open data dir {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("{path} is not a konsen data dir: {reason}")]
    NotADataDir { path: PathBuf, reason: String },
    #[error("data dir {path} is corrupted: {detail}")]
    Corruption { path: PathBuf, detail: String },
    #[error(
        "data dir {path} belongs to {found}, but this node is {expected}; refusing to start \
         (point the node at its own data dir, or move this one away)"
    )]
    IdentityMismatch {
        path: PathBuf,
        expected: NodeIdentity,
        found: NodeIdentity,
    },
    #[error("invalid node identity {0}: cluster id and node id must not be zero")]
    InvalidIdentity(NodeIdentity),
    #[error("rocksdb error in data dir {path}: {source}")]
    Rocks {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error(
        "entries must be contiguous, start after the purged index {purged} and at most one \
         past the last index {last}: got first index {first}"
    )]
    NotContiguous {
        purged: Index,
        last: Index,
        first: Index,
    },
    #[error(
        "store_commit may only move the commit index: stored term {stored_term} vote {stored_vote:?}, \
         got term {term} vote {vote:?}"
    )]
    NotCommitOnly {
        stored_term: Term,
        stored_vote: Option<NodeId>,
        term: Term,
        vote: Option<NodeId>,
    },
    #[error("range [{lo}, {hi}] is outside the stored log [{first}, {last}]")]
    OutOfRange {
        lo: Index,
        hi: Index,
        first: Index,
        last: Index,
    },
    #[error(
        "committed entries must be applied in order: entry {index} after applied index {applied}"
    )]
    ApplyGap { applied: Index, index: Index },
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A snapshot sent by a peer is malformed. Nothing was installed.
    #[error("bad snapshot: {0}")]
    BadSnapshot(String),
    #[error("a snapshot is already being received")]
    SnapshotBusy,
}

/// A client's request that the store refuses. The messages follow etcd's
/// wording where etcd has one, so clients see familiar errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("key is not provided")]
    EmptyKey,
    #[error("request is too large: {size} bytes of key and value, limit request_bytes_max={max}")]
    TooLarge { size: usize, max: usize },
    #[error("value is provided (ignore_value is set)")]
    ValueProvided,
    #[error("lease is provided (ignore_lease is set)")]
    LeaseProvided,
    #[error("key not found")]
    KeyNotFound,
    // etcd's exact words: clients match on them.
    #[error("mvcc: required revision has been compacted")]
    Compacted { requested: i64, compacted: i64 },
    #[error("mvcc: required revision is a future revision")]
    FutureRevision { requested: i64, current: i64 },
    #[error("revision {0} is negative")]
    NegativeRevision(i64),
    #[error("too many operations in txn request")]
    TooManyOps { count: usize, max: usize },
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("txn request nested too deep (limit txn_depth_max={max})")]
    TxnTooDeep { max: usize },
    #[error("malformed command: {0}")]
    Decode(#[from] DecodeError),
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("too large lease TTL")]
    LeaseTtlTooLarge { ttl: i64, max: i64 },
    /// etcd raises a TTL of 0 or less to its minimum; konsen refuses it,
    /// as a client that asks for it almost surely meant something else.
    #[error("lease TTL must be positive (got {0})")]
    LeaseTtlNotPositive(i64),
    #[error("lease ID must be positive (got {0})")]
    LeaseIdNotPositive(i64),
}

/// Bytes that are not a valid encoding of `what`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} is truncated: {needed} more bytes needed, {remaining} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("{what} has {count} unexpected trailing bytes")]
    Trailing { what: &'static str, count: usize },
    #[error("{what} has unknown format version {version}")]
    UnknownVersion { what: &'static str, version: u8 },
    #[error("{what} has an invalid {field}: {value}")]
    Invalid {
        what: &'static str,
        field: &'static str,
        value: u64,
    },
}
