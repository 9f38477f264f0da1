//! konsen-core: the Raft consensus protocol as a deterministic state machine.
//!
//! This crate decides; it does not do. It has no threads, no clock, no
//! network, no disk and no randomness of its own. A driver (konsen-server in
//! production, the simulator in tests) feeds it inputs and carries out what
//! it asks for:
//!
//! * **Inputs.** [`RawNode::tick`] advances logical time (elections and
//!   heartbeats are counted in ticks); [`RawNode::step`] hands it a message
//!   from a peer; [`RawNode::propose`] offers a command for the log;
//!   [`RawNode::read_index`] asks for a linearizable read;
//!   [`RawNode::transfer_leader`] hands leadership to another voter.
//! * **Outputs.** [`RawNode::ready`] returns a [`Ready`]: the hard state and
//!   log entries to persist, the messages to send, the committed entries to
//!   apply and the reads that became safe to serve.
//!
//! # The driver's duties
//!
//! For each `Ready`, in this order:
//!
//! 0. If `snapshot` is set, install the snapshot that arrived with it
//!    (a follower that fell behind the leader's compacted log).
//! 1. Write `hard_state` and `entries` to stable storage and sync it. An
//!    entry at an index that is already stored replaces it and every entry
//!    after it. A vote or a term must be on disk before any message that
//!    depends on it leaves the node.
//! 2. Send `messages`. A leader's `Append` and `Heartbeat` messages may go
//!    out before step 1 finishes ([`Message::may_send_before_persist`]),
//!    so the leader writes its log in parallel with replicating it; every
//!    other message waits for step 1.
//! 3. Apply `committed_entries` in order, recording the applied index in
//!    the same atomic write as the state it produced. Serve each read in
//!    `read_states` once the applied index reaches its `index`; fail the
//!    ones in `read_failures`.
//! 4. Call [`RawNode::advance`].
//!
//! After a restart, the driver rebuilds the node with [`RawNode::new`] from
//! what it persisted ([`RestoredState`]). Anything not persisted is as if it
//! never happened, which the protocol tolerates.
//!
//! # Determinism
//!
//! The only randomness is the election timeout, drawn from a generator
//! seeded by [`Config::seed`]. The same configuration, seed and sequence of
//! inputs always produce the same outputs; the simulator in `tests/` relies
//! on it to replay a failing run from its seed.
//!
//! # Errors and panics
//!
//! Bad input from a peer (a message for another node, a malformed append,
//! an out-of-range index) is dropped with a [`StepError`]; a request the
//! node cannot take returns an error. A broken internal invariant panics
//! with a message that names it: continuing would risk the data.
//!
//! # Layout
//!
//! * `types.rs`: entries, hard state, messages, membership.
//! * `config.rs`: settings and their validation.
//! * `log.rs`: the in-memory log with its stable, commit and apply marks.
//! * `progress.rs`: the leader's per-follower replication state.
//! * `raft/`: the protocol: roles and dispatch (`mod.rs`), elections,
//!   replication and commitment, ReadIndex.
//! * `node.rs`: [`RawNode`] and [`Ready`], the driver's interface.
//! * `storage.rs`: the [`storage::Storage`] contract, [`storage::MemStorage`],
//!   and the conformance suite every implementation must pass.

mod config;
mod error;
mod log;
mod node;
mod progress;
mod raft;
pub mod storage;
mod types;

pub use config::{Config, NegativeControl};
pub use error::{
    CompactError, ConfigError, InitError, ProposeError, ReadError, StepError, TransferError,
};
pub use log::RaftLog;
pub use node::{RawNode, Ready, RestoredState, Status};
pub use progress::{Progress, ProgressState};
pub use types::{
    ENTRY_OVERHEAD_BYTES, Entry, EntryKind, HardState, Index, Membership, Message, MessageBody,
    NodeId, ReadFailure, ReadState, RejectHint, Role, SnapshotMeta, SoftState, Term,
};
