//! Errors the core returns. Bad input is an error; a broken invariant of the
//! core itself panics instead, with a message naming the invariant.

use crate::types::{Index, NodeId, Term};

/// A setting of [`crate::Config`] is out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft config: {field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

/// Why the core could not start from the state it was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("node {id} is not in the membership {members:?}")]
    NotAMember { id: NodeId, members: Vec<NodeId> },
    #[error("the membership has no voters")]
    NoVoters,
    #[error("restored log is not contiguous: entry {found} follows index {expected_after}")]
    LogGap { expected_after: Index, found: Index },
    #[error("restored hard state commits index {commit} beyond the last log index {last}")]
    CommitBeyondLog { commit: Index, last: Index },
    #[error("restored log has term {entry_term} at index {index}, above the current term {term}")]
    EntryTermAboveCurrent {
        index: Index,
        entry_term: Term,
        term: Term,
    },
}

/// Why a proposal was not accepted. None of these mean the proposal was
/// applied; the client may retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("leadership is being transferred to node {to}")]
    Transferring { to: NodeId },
    #[error("too many uncommitted bytes ({pending} pending, limit uncommitted_bytes_max={max})")]
    Backpressure { pending: usize, max: usize },
}

/// Why a read-index request was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no known leader to confirm the read")]
    NoLeader,
    #[error("too many pending reads (limit pending_reads_max={max})")]
    Backpressure { max: usize },
}

/// Why a leader transfer was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
}

/// Why a message from a peer was dropped. Dropping is always safe: Raft
/// tolerates lost messages. The driver may log these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("message addressed to node {to}, but this is node {this}")]
    WrongRecipient { to: NodeId, this: NodeId },
    #[error("message from node {0}, which is not a member")]
    UnknownSender(NodeId),
    #[error("message from node {from} claims to be from this node")]
    FromSelf { from: NodeId },
    #[error("{what} from node {from} is malformed: {reason}")]
    Malformed {
        from: NodeId,
        what: &'static str,
        reason: &'static str,
    },
}

/// Why the log could not be compacted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("cannot compact to index {index}: only {applied} is applied and persisted")]
    NotApplied { index: Index, applied: Index },
}
