//! The values that cross the core's boundary: log entries, hard state,
//! messages between peers, and read results.
//!
//! These are plain Rust types. `konsen-rpc` converts them to and from the
//! wire; nothing here knows about protobuf.

use std::collections::BTreeSet;

use bytes::Bytes;

/// A node's identity within a cluster. Zero is never a valid id.
pub type NodeId = u64;
/// A Raft term. Term 0 is the state before any election.
pub type Term = u64;
/// A position in the Raft log. The first real entry has index 1; index 0 is
/// the empty log's sentinel.
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An opaque command for the state machine. An empty payload is the
    /// no-op a new leader appends at the start of its term.
    Normal,
    /// A new voter set (membership change). The payload is the encoded
    /// [`Membership`].
    Membership,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    /// The command. `Bytes` so that the same buffer travels from the client
    /// request through the log and the network to the state machine.
    pub data: Bytes,
}

impl Entry {
    /// Approximate size in bytes, used for the `*_bytes_max` limits.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// The fixed part of an entry counted against byte limits (index, term,
/// kind), so that empty entries are not free.
pub const ENTRY_OVERHEAD_BYTES: usize = 24;

/// The state that must be on stable storage before the node answers any
/// message: the current term, the vote cast in it, and the commit index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
}

/// The cluster's membership: which nodes vote, and which only learn.
///
/// It is data, kept in the core's state and carried in snapshots, so that
/// membership changes can alter it at run time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A membership of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// The number of votes (or acknowledgements) that make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `id` is a voter or learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Given each voter's position (for example its match index), the
    /// highest value that a quorum of voters has reached.
    pub fn quorum_value(&self, mut value_of: impl FnMut(NodeId) -> u64) -> u64 {
        let mut values: Vec<u64> = self.voters.iter().map(|&id| value_of(id)).collect();
        if values.is_empty() {
            return 0;
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        values[self.quorum() - 1]
    }

    /// Whether the voters for which `granted` is true form a quorum.
    pub fn has_quorum(&self, mut granted: impl FnMut(NodeId) -> bool) -> bool {
        self.voters.iter().filter(|&&id| granted(id)).count() >= self.quorum()
    }
}

/// A message between two Raft peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term (for pre-votes: the term the sender would campaign in).
    pub term: Term,
    pub body: MessageBody,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Would you vote for me in `term`? Sent without raising the sender's term
    /// (thesis 9.6).
    PreVote { last_index: Index, last_term: Term },
    /// The answer to a pre-vote.
    PreVoteResponse { granted: bool },
    /// Vote for me in `term`. `transfer` is set when the election was asked
    /// for by the old leader (leader transfer), so voters must not refuse it
    /// because they recently heard from that leader.
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    /// The answer to a vote request.
    VoteResponse { granted: bool },
    /// Append `entries` after `(prev_index, prev_term)`, and learn `commit`.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// The answer to an append. On success `index` is the last index the
    /// follower now matches; on rejection `index` is the rejected
    /// `prev_index`, and the hint says where the leader should retry.
    AppendResponse {
        index: Index,
        reject: Option<RejectHint>,
    },
    /// The leader is alive; `commit` is capped at what the follower matches.
    /// `read_seq` identifies the ReadIndex round this heartbeat confirms.
    Heartbeat { commit: Index, read_seq: u64 },
    /// The answer to a heartbeat, echoing its read round.
    HeartbeatResponse { read_seq: u64 },
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndex { ctx: u64 },
    /// The leader's answer: the read may be served once the asker has
    /// applied `index`. `index` is `None` when the leader refused (it could
    /// not confirm leadership, or is transferring it away).
    ReadIndexResponse { ctx: u64, index: Option<Index> },
    /// Start an election now, skipping pre-vote (leader transfer).
    TimeoutNow,
    /// The leader no longer holds the entries this follower needs: replace
    /// the log up to `meta.index` with the snapshot described by `meta`.
    /// The snapshot's data travels beside the message (the driver streams
    /// it); the core only sees its description.
    InstallSnapshot { meta: SnapshotMeta },
}

/// What a snapshot covers: the state machine after applying every entry up
/// to `index` (whose term is `term`), and the membership in force then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub membership: Membership,
}

/// A follower's hint after rejecting an append: the term of its entry at the
/// rejected position and the first index it holds in that term, or, when
/// its log is too short, just its last index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// The term of the follower's conflicting entry; `None` if the follower's
    /// log ends before `prev_index`.
    pub conflict_term: Option<Term>,
    /// With a term: the follower's first index in that term. Without: the
    /// follower's last index + 1.
    pub conflict_index: Index,
}

impl MessageBody {
    /// A short, stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
        }
    }
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// The volatile state worth reporting when it changes: who leads, in which
/// term, and this node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
}

/// A linearizable read that has become safe to serve: once the state machine
/// has applied `index`, the read identified by `ctx` may read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
}

/// A read that could not be confirmed (leadership lost or moved). The client
/// should retry, probably elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadFailure {
    pub ctx: u64,
}
