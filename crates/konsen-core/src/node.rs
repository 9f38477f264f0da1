//! [`RawNode`]: the driver's handle on the core, and [`Ready`], what the
//! driver must do next.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::config::Config;
use crate::error::{CompactError, InitError, ProposeError, ReadError, StepError, TransferError};
use crate::log::RaftLog;
use crate::progress::ProgressState;
use crate::raft::Raft;
use crate::types::{
    Entry, EntryKind, HardState, Index, Membership, Message, NodeId, ReadFailure, ReadState, Role,
    SnapshotMeta, SoftState, Term,
};

/// What stable storage held when the node (re)started.
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    pub hard_state: HardState,
    /// The membership in force (from the configuration, or the last
    /// snapshot once snapshots exist).
    pub membership: Membership,
    /// The index and term of the last entry covered by a snapshot (0, 0 if
    /// none); the log starts after it.
    pub snapshot_index: Index,
    pub snapshot_term: Term,
    /// The log entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The state machine's applied index: committed entries after it are
    /// handed out again.
    pub applied: Index,
}

/// The work the driver must do, in this order:
///
/// 0. if `snapshot` is set, install the snapshot data received with it
///    (state machine and applied index at `snapshot.index`; log purged up to
///    it), atomically;
/// 1. persist `hard_state` (if any) and `entries` (replacing any stored
///    entries from the first one's index on), synced to disk if
///    `must_sync` ([`crate::storage::Storage::append`]); otherwise write
///    them without waiting for the disk: a leader's entries with
///    [`crate::storage::Storage::append_unsynced`], a moved commit index
///    alone with [`crate::storage::Storage::store_commit`];
/// 2. send `messages` (`Append` and `Heartbeat` messages may be sent before
///    step 1, see [`Message::may_send_before_persist`]);
/// 3. apply `committed_entries` in order and serve `read_states` once their
///    index is applied; fail the reads in `read_failures`;
/// 4. call [`RawNode::advance`].
#[derive(Debug, Default)]
#[must_use = "a Ready must be handled and then acknowledged with advance()"]
pub struct Ready {
    /// Set when role, term or leader changed.
    pub soft_state: Option<SoftState>,
    /// Set when the leader's snapshot must replace this node's state.
    pub snapshot: Option<SnapshotMeta>,
    /// Set when term, vote or commit changed.
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    /// Whether step 1 must be synced before anything after it: there are
    /// entries, or the term or vote changed (etcd's `MustSync`). A moved
    /// commit index alone need not be durable: a restarted node learns it
    /// again from the leader. Nor need a leader's entries while a quorum of
    /// followers keeps up ([`Config::lazy_sync_lag_max`]): the leader then
    /// counts them only once a later synced write covers them. When that
    /// write is due and nothing else is to be written, `entries` is empty
    /// and `hard_state` is the unchanged hard state, written again with a
    /// sync.
    pub must_sync: bool,
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub read_failures: Vec<ReadFailure>,
}

impl Message {
    /// Whether this message may be sent before the `Ready` that carries it
    /// is persisted. A leader's appends and heartbeats may: the leader's term
    /// was persisted before it could win it, and it counts its own entries
    /// towards commitment only after `advance` (thesis 10.2.1). Votes and
    /// acknowledgements may not: they promise what is on disk.
    pub fn may_send_before_persist(&self) -> bool {
        matches!(
            self.body,
            crate::MessageBody::Append { .. } | crate::MessageBody::Heartbeat { .. }
        )
    }
}

/// A point-in-time summary of the node, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub vote: Option<NodeId>,
    pub first_index: Index,
    pub last_index: Index,
    pub commit: Index,
    pub applied: Index,
    pub membership: Membership,
    pub transfer_target: Option<NodeId>,
}

/// The core's handle: feed it ticks, messages and requests; take `Ready`s
/// and acknowledge them.
#[derive(Debug)]
pub struct RawNode {
    raft: Raft,
    prev_hard: HardState,
    prev_soft: SoftState,
    /// What the last `Ready` handed out, until `advance`.
    in_flight: Option<HandedOut>,
    /// The leader's entries written without a sync.
    lazy: LazySync,
}

/// A leader's own appends written without a sync ([`Config::lazy_sync_lag_max`]).
#[derive(Debug, Default)]
struct LazySync {
    /// Entries were written unsynced since the last synced write.
    unsynced: bool,
    /// The last index of each of the leader's latest `Ready`s with entries,
    /// oldest first, at most `lazy_sync_lag_max + 1` of them.
    recent: VecDeque<Index>,
    /// At the last tick, the last index written, if some were unsynced.
    tick_mark: Option<Index>,
    /// Unsynced entries did not commit within a tick (or as soon as the
    /// driver noticed, [`RawNode::sync_own_entries`]): sync now.
    due: bool,
    /// After such a stall, the last index the forced sync covered: the
    /// leader syncs again until a quorum of followers holds it (the one
    /// that stalled is back), rather than stalling once per lag window.
    resume_at: Index,
}

/// What a `Ready` handed to the driver: the last entry to persist, whether
/// with a sync, and the last committed entry to apply.
#[derive(Debug, Clone, Copy)]
struct HandedOut {
    persist: Option<(Index, Term)>,
    synced: bool,
    apply: Option<Index>,
}

impl RawNode {
    /// Starts a node from what stable storage held (all defaults for a brand
    /// new node). Validates the configuration and the restored state.
    pub fn new(config: Config, restored: RestoredState) -> Result<Self, InitError> {
        config.validate()?;
        let RestoredState {
            hard_state,
            membership,
            snapshot_index,
            snapshot_term,
            entries,
            applied,
        } = restored;
        if membership.voters.is_empty() {
            return Err(InitError::NoVoters);
        }
        if !membership.contains(config.id) {
            return Err(InitError::NotAMember {
                id: config.id,
                members: membership.members().collect(),
            });
        }
        let mut expected = snapshot_index + 1;
        for e in &entries {
            if e.index != expected {
                return Err(InitError::LogGap {
                    expected_after: expected - 1,
                    found: e.index,
                });
            }
            if e.term > hard_state.term {
                return Err(InitError::EntryTermAboveCurrent {
                    index: e.index,
                    entry_term: e.term,
                    term: hard_state.term,
                });
            }
            expected += 1;
        }
        let last = expected - 1;
        if hard_state.commit > last {
            return Err(InitError::CommitBeyondLog {
                commit: hard_state.commit,
                last,
            });
        }
        let applied = applied.min(hard_state.commit).max(snapshot_index);
        let log = RaftLog::restore(
            snapshot_index,
            snapshot_term,
            entries,
            hard_state.commit,
            applied,
        );
        let raft = Raft::new(config, membership, hard_state, log);
        Ok(RawNode {
            prev_hard: raft.hard_state(),
            prev_soft: raft.soft_state(),
            raft,
            in_flight: None,
            lazy: LazySync::default(),
        })
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
        // Entries written unsynced by the last tick and still not committed:
        // a follower the quorum needs has stopped answering. The leader's
        // own copy must count then.
        let lazy = &mut self.lazy;
        if lazy.unsynced {
            if lazy
                .tick_mark
                .is_some_and(|mark| self.raft.log.committed() < mark)
            {
                lazy.due = true;
            }
            lazy.tick_mark = Some(self.raft.log.stable());
        } else {
            lazy.tick_mark = None;
        }
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        self.raft.step(message)
    }

    /// Proposes a command; returns the index it will have if it commits.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        self.raft.propose(EntryKind::Normal, data)
    }

    /// Asks for a linearizable read; see [`Ready::read_states`].
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ReadError> {
        self.raft.read_index(ctx)
    }

    /// Hands leadership to `to` (thesis 3.10).
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        self.raft.transfer_leader(to)
    }

    /// Tells the core that the connection to `peer` broke (its process
    /// died, or closed its sockets). A follower that loses its leader this
    /// way campaigns within [`Config::leader_down_ticks_max`] ticks rather
    /// than a full election timeout. Only liveness depends on this: a wrong
    /// report is harmless, a missing one only slows failover down.
    pub fn report_peer_down(&mut self, peer: NodeId) {
        self.raft.peer_down(peer);
    }

    /// Starts an election now, as if the election timer had fired.
    pub fn campaign(&mut self) {
        if self.raft.role != Role::Leader {
            self.raft.start_election(false);
        }
    }

    /// Whether this leader holds entries written without a sync that have
    /// not committed yet. A driver that sees the commit index stand still
    /// meanwhile for longer than a follower round should take, calls
    /// [`RawNode::sync_own_entries`]; the core itself notices only at the
    /// next tick.
    pub fn has_unsynced_uncommitted(&self) -> bool {
        self.lazy.unsynced && self.raft.log.committed() < self.raft.log.stable()
    }

    /// Makes the next `Ready` sync the entries this leader wrote without a
    /// sync, so that its own copy counts and they commit with one follower.
    pub fn sync_own_entries(&mut self) {
        if self.lazy.unsynced {
            self.lazy.due = true;
        }
    }

    /// Whether there is anything for the driver to do.
    pub fn has_ready(&mut self) -> bool {
        self.flush();
        let r = &self.raft;
        !r.msgs.is_empty()
            || r.pending_snapshot.is_some()
            || r.log.stable() < r.log.last_index()
            || r.log.applied() < r.log.committed()
            || !r.read_states.is_empty()
            || !r.read_failures.is_empty()
            || r.hard_state() != self.prev_hard
            || r.soft_state() != self.prev_soft
            || (self.lazy.unsynced && !self.followers_keep_up())
    }

    /// Whether this leader may leave its own entries unsynced: a quorum of
    /// voters other than itself is replicating and has acknowledged (so
    /// holds on disk) everything the leader wrote up to `lazy_sync_lag_max`
    /// `Ready`s (with entries) before its latest one. Safety does not rest
    /// on this, only speed: the leader counts its own entries towards
    /// commitment only once synced.
    fn followers_keep_up(&self) -> bool {
        let r = &self.raft;
        let lag_max = r.cfg.lazy_sync_lag_max as usize;
        if r.role != Role::Leader || lag_max == 0 || self.lazy.due {
            return false;
        }
        let (Some(&mark), true) = (self.lazy.recent.front(), self.lazy.recent.len() > lag_max)
        else {
            return false;
        };
        let mark = mark.max(self.lazy.resume_at);
        r.membership.has_quorum(|id| {
            id != r.id
                && r.progress
                    .get(&id)
                    .is_some_and(|p| p.state == ProgressState::Replicate && p.match_index >= mark)
        })
    }

    /// Leader work deferred until a `Ready` is built, so that many
    /// proposals and reads share messages.
    fn flush(&mut self) {
        if self.raft.role == Role::Leader {
            self.raft.broadcast_append();
            self.raft.flush_reads();
        }
    }

    /// Collects the work to do. Must be followed by [`RawNode::advance`]
    /// before the next call.
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.in_flight.is_none(),
            "ready/advance protocol invariant: ready() called again before advance()"
        );
        self.flush();
        let r = &mut self.raft;
        let hard = r.hard_state();
        let soft = r.soft_state();
        let entries = r.log.unstable_entries();
        let committed_entries = r.log.next_committed(r.cfg.apply_bytes_max);
        let term_or_vote = hard.term != self.prev_hard.term || hard.vote != self.prev_hard.vote;
        if r.role != Role::Leader {
            self.lazy.recent.clear();
            self.lazy.resume_at = 0;
        } else if let Some(last) = entries.last() {
            self.lazy.recent.push_back(last.index);
            if self.lazy.recent.len() > r.cfg.lazy_sync_lag_max as usize + 1 {
                self.lazy.recent.pop_front();
            }
        }
        let keep_up = self.followers_keep_up();
        let r = &mut self.raft;
        let must_sync =
            term_or_vote || (!entries.is_empty() && !keep_up) || (self.lazy.unsynced && !keep_up);
        // A sync due with nothing to write writes the hard state again.
        let rewrite = must_sync && entries.is_empty();
        let ready = Ready {
            must_sync,
            snapshot: r.pending_snapshot.take(),
            soft_state: (soft != self.prev_soft).then_some(soft),
            hard_state: (hard != self.prev_hard || rewrite).then_some(hard),
            messages: std::mem::take(&mut r.msgs),
            read_states: std::mem::take(&mut r.read_states),
            read_failures: std::mem::take(&mut r.read_failures),
            entries,
            committed_entries,
        };
        self.prev_hard = hard;
        self.prev_soft = soft;
        self.in_flight = Some(HandedOut {
            persist: ready.entries.last().map(|e| (e.index, e.term)),
            synced: must_sync,
            apply: ready.committed_entries.last().map(|e| e.index),
        });
        ready
    }

    /// Acknowledges the last `Ready`: its entries and hard state are on
    /// disk, its messages sent and its committed entries applied.
    pub fn advance(&mut self) {
        let HandedOut {
            persist: persisted,
            synced,
            apply: applied,
        } = self
            .in_flight
            .take()
            .expect("ready/advance protocol invariant: advance() without a pending ready()");
        if let Some((index, term)) = persisted {
            self.raft.log.stable_to(index, term);
        }
        if synced {
            // A synced write makes everything written before it durable.
            let wrote_unsynced = std::mem::take(&mut self.lazy.unsynced);
            if std::mem::take(&mut self.lazy.due) {
                self.lazy.resume_at = self.raft.log.stable();
            }
            self.lazy.tick_mark = None;
            if persisted.is_some() || wrote_unsynced {
                self.raft.own_entries_persisted(self.raft.log.stable());
            }
        } else if let Some((index, _)) = persisted {
            self.lazy.unsynced = true;
            if self.raft.cfg.unsafe_negative_control
                == Some(crate::config::NegativeControl::CountUnsyncedOwnEntries)
            {
                self.raft.own_entries_persisted(index);
            }
        }
        if let Some(index) = applied {
            self.raft.log.applied_to(index);
        }
    }

    /// The driver made a snapshot of the state machine at `index` (which it
    /// has applied): the log up to `index` may be forgotten. A follower
    /// that needs those entries is sent the snapshot instead.
    pub fn compact(&mut self, index: Index) -> Result<(), CompactError> {
        let log = &mut self.raft.log;
        if index > log.applied() || index > log.stable() {
            return Err(CompactError::NotApplied {
                index,
                applied: log.applied().min(log.stable()),
            });
        }
        log.compact(index);
        Ok(())
    }

    /// The driver reports whether the snapshot sent to `to` arrived; it must
    /// report every snapshot it was asked to send, one way or the other.
    /// Until then the leader sends `to` nothing else.
    pub fn report_snapshot(&mut self, to: NodeId, delivered: bool) {
        self.raft.report_snapshot(to, delivered);
    }

    /// A summary of the node's state.
    pub fn status(&self) -> Status {
        let r = &self.raft;
        Status {
            id: r.id,
            role: r.role,
            term: r.term,
            leader: r.leader,
            vote: r.vote,
            first_index: r.log.first_index(),
            last_index: r.last_index(),
            commit: r.log.committed(),
            applied: r.log.applied(),
            membership: r.membership.clone(),
            transfer_target: r.transfer_target(),
        }
    }

    /// The node's log, read-only (for checks and tests).
    pub fn log(&self) -> &RaftLog {
        &self.raft.log
    }

    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    pub fn role(&self) -> Role {
        self.raft.role
    }

    pub fn term(&self) -> Term {
        self.raft.term
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader
    }
}
