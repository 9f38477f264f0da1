//! Conversions between wire types and konsen's own types, in one place.
//!
//! * `raft.rs`: peer protocol messages <-> konsen-core [`konsen_core::Message`].
//! * `etcd.rs` (feature `storage`): etcd KV requests <-> konsen-storage
//!   commands and reads.
//! * `forward.rs` (feature `storage`): forwarded writes and their results.
//! * `watch.rs` (feature `storage`): watch requests and history events.
//! * `snapshot.rs` (feature `storage`): snapshot chunks, checksummed.
//!
//! Wire → ours is fallible ([`crate::ConvertError`]): peers and clients can
//! send anything. Ours → wire cannot fail.

mod raft;
pub use raft::{
    entry_from_wire, entry_to_wire, message_from_wire, message_to_wire, snapshot_meta_from_wire,
    snapshot_meta_to_wire,
};

#[cfg(feature = "storage")]
mod etcd;
#[cfg(feature = "storage")]
pub use etcd::{
    delete_request_to_command, key_value_from_etcd, key_value_to_etcd, put_request_to_command,
    range_request_from_etcd, txn_request_from_etcd, txn_result_from_etcd, txn_result_to_etcd,
};

#[cfg(feature = "storage")]
mod forward;
#[cfg(feature = "storage")]
pub use forward::{WriteOutcome, WriteResult, write_outcome_from_wire, write_outcome_to_wire};

#[cfg(feature = "storage")]
mod watch;
#[cfg(feature = "storage")]
pub use watch::{WatchSpec, change_to_event, watch_spec_from_etcd};

#[cfg(feature = "storage")]
mod snapshot;
#[cfg(feature = "storage")]
pub use snapshot::{SnapshotChunk, snapshot_chunk_from_wire, snapshot_chunk_to_wire};
