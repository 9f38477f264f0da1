//! Leader election: pre-vote (thesis 9.6), votes with the election
//! restriction (§5.4.1), and becoming leader.

use crate::config::NegativeControl;
use crate::progress::Progress;
use crate::types::{Entry, EntryKind, Index, MessageBody, NodeId, Role, Term};

use super::Raft;

/// Ticks after a split vote before the higher-id candidate tries again
/// (the lower one tries after 1): room for the lower one's pre-vote and
/// vote rounds, fsyncs included, to finish first.
const SPLIT_VOTE_RETRY_TICKS_HIGHER: u32 = 3;

impl Raft {
    /// Starts an election: a pre-vote round first when enabled, unless the
    /// old leader asked for it (`transfer`), which goes straight to a vote.
    pub(crate) fn start_election(&mut self, transfer: bool) {
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        // The term stays: a pre-vote asks whether we could win term + 1.
        self.role = Role::PreCandidate;
        self.leader = None;
        self.fail_reads();
        self.votes.clear();
        self.reset_election_timer();
        self.ask_for_votes(true, false);
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.fail_reads();
        self.votes.clear();
        self.reset_election_timer();
        self.ask_for_votes(false, transfer);
    }

    fn ask_for_votes(&mut self, pre_vote: bool, transfer: bool) {
        self.votes.insert(self.id, true);
        if self.tally_won() {
            return;
        }
        let term = if pre_vote { self.term + 1 } else { self.term };
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let id = self.id;
        let voters: Vec<NodeId> = self
            .membership
            .voters
            .iter()
            .copied()
            .filter(|&v| v != id)
            .collect();
        for to in voters {
            let body = if pre_vote {
                MessageBody::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                }
            };
            self.send_with_term(to, term, body);
        }
    }

    /// Answers a (pre-)vote request for `term`, which is at least ours.
    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_index: Index,
        last_term: Term,
    ) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        let log_ok = self.log.is_up_to_date(last_index, last_term)
            || self.cfg.unsafe_negative_control == Some(NegativeControl::VoteWithoutLogCheck);
        let granted = can_vote && log_ok;
        if pre_vote {
            // A granted pre-vote answers in the asked-for term so the asker
            // counts it; a refusal carries our term so the asker catches up.
            let reply_term = if granted { term } else { self.term };
            self.send_with_term(from, reply_term, MessageBody::PreVoteResponse { granted });
        } else {
            if granted {
                self.vote = Some(from);
                self.election_elapsed = 0;
            } else if self.role == Role::Candidate && self.vote == Some(self.id) {
                self.split_vote_seen(from);
            }
            self.send(from, MessageBody::VoteResponse { granted });
        }
    }

    /// Another candidate asked for this node's vote in the term this node
    /// campaigns in: the vote is split, and neither may win the term.
    /// Rather than both waiting out a full election timeout (1–2 of them:
    /// seconds), and maybe splitting again, the lower id tries again after
    /// one tick and the higher after [`SPLIT_VOTE_RETRY_TICKS_HIGHER`], by
    /// when the lower has normally won. Only the timing changes, so safety
    /// does not depend on it; if the lower cannot win (its log is behind),
    /// the higher's turn comes next.
    fn split_vote_seen(&mut self, other: NodeId) {
        let delay = if self.id < other {
            1
        } else {
            SPLIT_VOTE_RETRY_TICKS_HIGHER
        };
        self.election_timeout = self
            .election_timeout
            .min(self.election_elapsed.saturating_add(delay));
    }

    /// Counts an answer; wins or gives up once the outcome is decided.
    pub(super) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if !self.membership.voters.contains(&from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        if self.tally_won() {
            return;
        }
        let votes = &self.votes;
        let lost = self
            .membership
            .has_quorum(|id| votes.get(&id).is_some_and(|g| !g));
        if lost {
            self.become_follower(self.term, None);
        }
    }

    /// Moves on if a quorum granted. Returns whether it did.
    fn tally_won(&mut self) -> bool {
        let votes = &self.votes;
        if !self
            .membership
            .has_quorum(|id| votes.get(&id).copied().unwrap_or(false))
        {
            return false;
        }
        match self.role {
            Role::PreCandidate => self.become_candidate(false),
            Role::Candidate => self.become_leader(),
            role => unreachable!("vote tally invariant: counting votes as {role:?}"),
        }
        true
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.vote,
            Some(self.id),
            "election invariant: a leader voted for itself in its term"
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.committed_in_term = false;
        let next = self.log.last_index() + 1;
        let members: Vec<NodeId> = self.membership.members().collect();
        self.progress = members
            .into_iter()
            .map(|id| (id, Progress::new(next)))
            .collect();
        let stable = self.log.stable();
        if let Some(own) = self.progress.get_mut(&self.id) {
            own.matched(stable);
        }
        // §5.4.2 / thesis 6.4: an entry of the new term, so that earlier
        // entries commit and ReadIndex can be served.
        let noop = Entry {
            index: next,
            term: self.term,
            kind: EntryKind::Normal,
            data: bytes::Bytes::new(),
        };
        self.log.append_new(noop);
        self.maybe_commit();
        self.broadcast_append();
    }
}
