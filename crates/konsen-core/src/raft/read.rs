//! Linearizable reads with ReadIndex (thesis 6.4).
//!
//! The leader notes its commit index when a read arrives, confirms it is
//! still leader by a round of heartbeats that a quorum answers, and then
//! releases the read at that index. Reads that arrive between two `Ready`s
//! share one round. A leader serves no read before it has committed an
//! entry of its own term, since until then its commit index may lag.
//! A follower forwards the request to its leader and releases the read when
//! the answer comes.

use std::collections::{BTreeSet, VecDeque};

use crate::error::ReadError;
use crate::types::{Index, MessageBody, NodeId, ReadFailure, ReadState, Role};

use super::Raft;

/// A read waiting for confirmation.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    /// The node that asked (for forwarded reads), or `None` for this node.
    from: Option<NodeId>,
    /// The commit index the read must see.
    index: Index,
    /// The heartbeat round that confirms it (0: not yet assigned).
    seq: u64,
}

/// Reads in progress on one node.
#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    /// Leader: reads waiting for the first commit of the term.
    awaiting_commit: Vec<PendingRead>,
    /// Leader: reads waiting for confirmation, in arrival order (so rounds
    /// are non-decreasing along the queue).
    pending: VecDeque<PendingRead>,
    /// The last heartbeat round started.
    seq: u64,
    /// Follower: reads forwarded to the leader, awaiting its answer.
    forwarded: BTreeSet<u64>,
}

impl ReadQueue {
    fn len(&self) -> usize {
        self.awaiting_commit.len() + self.pending.len() + self.forwarded.len()
    }

    /// The round that the next heartbeat confirms.
    pub(crate) fn current_seq(&self) -> u64 {
        self.seq
    }

    /// Drops every read: leadership changed or was lost. Returns the local
    /// reads that failed; remote askers notice their leader changed.
    pub(crate) fn fail_all(&mut self) -> Vec<ReadFailure> {
        let local = self
            .awaiting_commit
            .drain(..)
            .chain(self.pending.drain(..))
            .filter(|r| r.from.is_none())
            .map(|r| ReadFailure { ctx: r.ctx });
        let forwarded = std::mem::take(&mut self.forwarded)
            .into_iter()
            .map(|ctx| ReadFailure { ctx });
        local.chain(forwarded).collect()
    }
}

impl Raft {
    /// Asks for a linearizable read identified by `ctx`. When it is safe, a
    /// `ReadState { ctx, index }` comes out in a `Ready`: the read may be
    /// served once the state machine has applied `index`.
    pub(crate) fn read_index(&mut self, ctx: u64) -> Result<(), ReadError> {
        if self.reads.len() >= self.cfg.pending_reads_max {
            return Err(ReadError::Backpressure {
                max: self.cfg.pending_reads_max,
            });
        }
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.enqueue_read(ctx, None);
                Ok(())
            }
            (_, Some(leader)) => {
                self.reads.forwarded.insert(ctx);
                self.send(leader, MessageBody::ReadIndex { ctx });
                Ok(())
            }
            (_, None) => Err(ReadError::NoLeader),
        }
    }

    fn enqueue_read(&mut self, ctx: u64, from: Option<NodeId>) {
        let read = PendingRead {
            ctx,
            from,
            index: self.log.committed(),
            seq: 0,
        };
        if self.committed_in_term {
            self.reads.pending.push_back(read);
        } else {
            self.reads.awaiting_commit.push(read);
        }
    }

    /// Leader: a follower asks for a read index on behalf of its client.
    pub(super) fn handle_remote_read(&mut self, from: NodeId, ctx: u64) {
        if self.role != Role::Leader || self.reads.len() >= self.cfg.pending_reads_max {
            self.send(from, MessageBody::ReadIndexResponse { ctx, index: None });
            return;
        }
        self.enqueue_read(ctx, Some(from));
    }

    /// Follower: the leader answered a forwarded read.
    pub(super) fn handle_read_index_response(&mut self, ctx: u64, index: Option<Index>) {
        if !self.reads.forwarded.remove(&ctx) {
            return; // already failed, or not ours
        }
        match index {
            Some(index) => self.read_states.push(ReadState { ctx, index }),
            None => self.read_failures.push(ReadFailure { ctx }),
        }
    }

    /// Leader, when building a `Ready`: start one heartbeat round for the
    /// reads that arrived since the last one.
    pub(crate) fn flush_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.committed_in_term && !self.reads.awaiting_commit.is_empty() {
            // The first commit of the term happened: these reads must see it.
            let committed = self.log.committed();
            let waiting = std::mem::take(&mut self.reads.awaiting_commit);
            self.reads.pending.extend(waiting.into_iter().map(|mut r| {
                r.index = committed;
                r
            }));
        }
        let unassigned = self.reads.pending.back().is_some_and(|r| r.seq == 0);
        if !unassigned {
            return;
        }
        self.reads.seq += 1;
        let seq = self.reads.seq;
        for r in self.reads.pending.iter_mut().rev() {
            if r.seq != 0 {
                break;
            }
            r.seq = seq;
        }
        if self.membership.voters.len() > 1 {
            self.broadcast_heartbeat();
        }
        self.release_confirmed_reads();
    }

    /// Leader: releases the reads whose round a quorum has confirmed.
    pub(super) fn release_confirmed_reads(&mut self) {
        let id = self.id;
        let progress = &self.progress;
        let confirmed = self.membership.quorum_value(|peer| {
            if peer == id {
                u64::MAX
            } else {
                progress.get(&peer).map_or(0, |p| p.read_seq_acked)
            }
        });
        while let Some(r) = self.reads.pending.front().copied() {
            if r.seq == 0 || r.seq > confirmed {
                break;
            }
            self.reads.pending.pop_front();
            match r.from {
                None => self.read_states.push(ReadState {
                    ctx: r.ctx,
                    index: r.index,
                }),
                Some(to) => self.send(
                    to,
                    MessageBody::ReadIndexResponse {
                        ctx: r.ctx,
                        index: Some(r.index),
                    },
                ),
            }
        }
    }
}
