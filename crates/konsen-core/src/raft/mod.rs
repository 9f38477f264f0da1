//! The Raft state machine of one node: roles, terms, and the dispatch of
//! ticks and messages. Elections live in `election.rs`, log replication and
//! commitment in `replication.rs`, ReadIndex in `read.rs`.

mod election;
mod read;
mod replication;

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::error::StepError;
use crate::log::RaftLog;
use crate::progress::Progress;
use crate::types::{
    HardState, Index, Membership, Message, MessageBody, NodeId, ReadFailure, ReadState, Role,
    SnapshotMeta, SoftState, Term,
};

pub(crate) use read::ReadQueue;

/// One node's Raft state. Driven by [`crate::RawNode`].
#[derive(Debug)]
pub struct Raft {
    pub(crate) id: NodeId,
    pub(crate) cfg: Config,
    rng: SmallRng,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,
    pub(crate) membership: Membership,
    /// Leader only: each member's replication state, this node's included.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// (Pre-)candidate only: the answers received so far.
    votes: BTreeMap<NodeId, bool>,
    /// Ticks since the last election-timer reset (for a leader: since the
    /// last check-quorum round).
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    /// This round's randomized election timeout.
    election_timeout: u32,
    /// Leader only: a transfer in progress, and ticks since it began.
    transfer: Option<(NodeId, u32)>,
    /// Leader only: whether an entry of the current term is committed,
    /// which ReadIndex requires (thesis 6.4).
    pub(crate) committed_in_term: bool,
    /// Leader only: bytes of entries proposed but not yet committed.
    uncommitted_bytes: usize,
    pub(crate) reads: ReadQueue,
    /// Follower: a snapshot accepted but not yet handed to the driver.
    pub(crate) pending_snapshot: Option<SnapshotMeta>,
    /// Outgoing messages, drained into each `Ready`.
    pub(crate) msgs: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) read_failures: Vec<ReadFailure>,
}

impl Raft {
    /// A node in `term` with the given vote and log. The caller validated the
    /// config and the restored state.
    pub(crate) fn new(
        cfg: Config,
        membership: Membership,
        hard_state: HardState,
        log: RaftLog,
    ) -> Self {
        let mut raft = Raft {
            id: cfg.id,
            rng: SmallRng::seed_from_u64(cfg.seed),
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            membership,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            election_timeout: cfg.election_ticks,
            transfer: None,
            committed_in_term: false,
            uncommitted_bytes: 0,
            reads: ReadQueue::default(),
            pending_snapshot: None,
            msgs: Vec::new(),
            read_states: Vec::new(),
            read_failures: Vec::new(),
            cfg,
        };
        raft.reset_election_timer();
        raft
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.term,
            leader: self.leader,
        }
    }

    fn is_voter(&self) -> bool {
        self.membership.voters.contains(&self.id)
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let min = self.cfg.election_ticks;
        self.election_timeout = self.rng.random_range(min..2 * min);
    }

    /// Whether this node heard from a leader recently enough to refuse
    /// votes for others (the lease that check-quorum makes safe).
    fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_ticks
    }

    /// The driver saw its connection to `peer` break (the process died or
    /// closed its sockets). If `peer` is this follower's leader, the
    /// follower stops honouring its lease and campaigns after a short random
    /// delay instead of a full election timeout. A false report costs at
    /// most a pre-vote round: peers that still hear the leader refuse it.
    pub(crate) fn peer_down(&mut self, peer: NodeId) {
        if self.role != Role::Follower
            || self.leader != Some(peer)
            || self.cfg.leader_down_ticks_max == 0
        {
            return;
        }
        self.leader = None;
        self.fail_reads();
        let delay = self.rng.random_range(1..=self.cfg.leader_down_ticks_max);
        self.election_timeout = self
            .election_timeout
            .min(self.election_elapsed.saturating_add(delay));
    }

    /// Queues a message to `to` at the current term.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    /// Advances logical time by one tick.
    pub(crate) fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.election_timeout && self.is_voter() {
                    self.start_election(false);
                }
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                // Thesis 6.2: a leader cut off from a majority steps down so
                // clients go elsewhere instead of waiting on it.
                self.become_follower(self.term, None);
                return;
            }
        }
        if let Some((to, elapsed)) = self.transfer {
            if elapsed + 1 >= self.cfg.election_ticks {
                self.transfer = None; // the target did not take over in time
            } else {
                self.transfer = Some((to, elapsed + 1));
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum (counting this node) was heard from since the last
    /// round; clears the marks for the next round.
    fn quorum_recently_active(&mut self) -> bool {
        let id = self.id;
        let progress = &self.progress;
        let active = self
            .membership
            .has_quorum(|peer| peer == id || progress.get(&peer).is_some_and(|p| p.recent_active));
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        active
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "term monotonicity invariant: becoming follower in term {term} from term {}",
            self.term
        );
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.transfer = None;
        self.uncommitted_bytes = 0;
        self.committed_in_term = false;
        self.heartbeat_elapsed = 0;
        self.reset_election_timer();
        self.fail_reads();
    }

    /// Leadership changed or was lost: every read in progress fails.
    fn fail_reads(&mut self) {
        let failed = self.reads.fail_all();
        self.read_failures.extend(failed);
    }

    /// Handles a message from a peer. Invalid messages are dropped with an
    /// error; nothing a peer sends makes this panic.
    pub(crate) fn step(&mut self, m: Message) -> Result<(), StepError> {
        self.validate(&m)?;
        if m.term > self.term {
            if !self.step_higher_term(&m) {
                return Ok(());
            }
        } else if m.term < self.term {
            self.step_lower_term(&m);
            return Ok(());
        }
        self.step_current_term(m)
    }

    /// A message from a later term. Returns whether to go on handling it.
    fn step_higher_term(&mut self, m: &Message) -> bool {
        match m.body {
            MessageBody::PreVote { .. }
            | MessageBody::Vote {
                transfer: false, ..
            } if self.in_leader_lease() => {
                // Thesis 4.2.3: a node that hears from its leader ignores
                // disruptive vote requests, without adopting their term.
                false
            }
            // A pre-vote does not raise anyone's term, and a granted
            // pre-vote answer carries the term the sender would campaign in.
            MessageBody::PreVote { .. } => true,
            MessageBody::PreVoteResponse { granted: true } => true,
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, Some(m.from));
                true
            }
            _ => {
                self.become_follower(m.term, None);
                true
            }
        }
    }

    /// A message from an earlier term: mostly ignored, but a stale leader or
    /// pre-candidate is told the current term so that it catches up.
    fn step_lower_term(&mut self, m: &Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
                if self.cfg.check_quorum || self.cfg.pre_vote =>
            {
                // Without this, a leader that was partitioned away never
                // learns of the newer term: with pre-vote on, our own
                // elections never reach it.
                self.send(
                    m.from,
                    MessageBody::AppendResponse {
                        index: 0,
                        reject: None,
                    },
                );
            }
            MessageBody::PreVote { .. } => {
                self.send(m.from, MessageBody::PreVoteResponse { granted: false });
            }
            _ => {}
        }
    }

    fn step_current_term(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(m.from, m.term, true, last_index, last_term),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(m.from, m.term, false, last_index, last_term),
            MessageBody::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate && (!granted || m.term == self.term + 1) {
                    self.handle_vote_response(m.from, granted);
                }
            }
            MessageBody::VoteResponse { granted } => {
                if self.role == Role::Candidate && m.term == self.term {
                    self.handle_vote_response(m.from, granted);
                }
            }
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
                if self.role == Role::Leader =>
            {
                // Two leaders in one term: only possible if two nodes share
                // an id or a peer is broken. Refuse rather than follow.
                return Err(StepError::Malformed {
                    from: m.from,
                    what: m.body.name(),
                    reason: "sent by a second leader of this node's term (duplicate node id?)",
                });
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.follow(m.from);
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                self.follow(m.from);
                self.handle_heartbeat(m.from, commit, read_seq);
            }
            MessageBody::AppendResponse { index, reject } => {
                if self.role == Role::Leader {
                    self.handle_append_response(m.from, index, reject)?;
                }
            }
            MessageBody::HeartbeatResponse { read_seq } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(m.from, read_seq);
                }
            }
            MessageBody::ReadIndex { ctx } => self.handle_remote_read(m.from, ctx),
            MessageBody::ReadIndexResponse { ctx, index } => {
                self.handle_read_index_response(ctx, index)
            }
            MessageBody::InstallSnapshot { meta } => {
                self.follow(m.from);
                self.handle_snapshot(m.from, meta);
            }
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader && self.is_voter() {
                    self.start_election(true);
                }
            }
        }
        Ok(())
    }

    /// A leader of the current term spoke: follow it.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            self.become_follower(self.term, Some(leader));
        }
        self.election_elapsed = 0;
    }

    /// Rejects messages that no correct peer would send.
    fn validate(&self, m: &Message) -> Result<(), StepError> {
        if m.to != self.id {
            return Err(StepError::WrongRecipient {
                to: m.to,
                this: self.id,
            });
        }
        if m.from == self.id {
            return Err(StepError::FromSelf { from: m.from });
        }
        if !self.membership.contains(m.from) {
            return Err(StepError::UnknownSender(m.from));
        }
        let malformed = |reason| {
            Err(StepError::Malformed {
                from: m.from,
                what: m.body.name(),
                reason,
            })
        };
        if m.term == 0 || m.term == Term::MAX {
            return malformed("term out of range");
        }
        if let MessageBody::InstallSnapshot { meta } = &m.body
            && (meta.index == 0
                || meta.term == 0
                || meta.term > m.term
                || meta.membership.voters.is_empty())
        {
            return malformed("snapshot index, term or membership out of range");
        }
        if let MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } = &m.body
        {
            if *prev_term > m.term {
                return malformed("prev_term above the message term");
            }
            let mut min_term = *prev_term;
            for (expect_index, e) in (*prev_index + 1..).zip(entries) {
                if e.index != expect_index {
                    return malformed("entries are not contiguous after prev_index");
                }
                if e.term < min_term || e.term > m.term {
                    return malformed("entry terms out of order or above the message term");
                }
                min_term = e.term;
            }
        }
        Ok(())
    }

    /// Index of the last entry, for status and tests.
    pub(crate) fn last_index(&self) -> Index {
        self.log.last_index()
    }
}
