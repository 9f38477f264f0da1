//! Log replication (§5.3), commitment (§5.4.2), flow control, proposals and
//! leadership transfer (thesis 3.10).

use bytes::Bytes;

use crate::config::NegativeControl;
use crate::error::{ProposeError, StepError, TransferError};
use crate::types::{
    Entry, EntryKind, Index, MessageBody, NodeId, RejectHint, Role, SnapshotMeta, Term,
};

use super::Raft;

impl Raft {
    /// Appends a command to the leader's log. Replication happens when the
    /// driver next asks for a `Ready`, so proposals made in between share
    /// append messages.
    pub(crate) fn propose(&mut self, kind: EntryKind, data: Bytes) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some((to, _)) = self.transfer {
            return Err(ProposeError::Transferring { to });
        }
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            kind,
            data,
        };
        let size = entry.size_bytes();
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.cfg.uncommitted_bytes_max
        {
            return Err(ProposeError::Backpressure {
                pending: self.uncommitted_bytes,
                max: self.cfg.uncommitted_bytes_max,
            });
        }
        self.uncommitted_bytes += size;
        let index = entry.index;
        self.log.append_new(entry);
        Ok(index)
    }

    /// Sends what each follower is missing (and the commit index, if it
    /// moved), within flow-control limits.
    pub(crate) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&p| p != self.id)
            .collect();
        for peer in peers {
            self.send_append(peer, false);
        }
    }

    /// Sends one append to `to` if it is missing entries or the commit
    /// index, or if `force` (a probe). Returns whether one was sent.
    fn send_append(&mut self, to: NodeId, force: bool) -> bool {
        let last = self.log.last_index();
        let committed = self.log.committed();
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused(self.cfg.inflight_msgs_max) {
            return false;
        }
        let has_entries = pr.next_index <= last;
        let commit_behind = pr.commit_sent < committed;
        if !has_entries && !commit_behind && !force {
            return false;
        }
        // Batching under load: while `small_appends_inflight_max` appends
        // with entries are unacknowledged, new entries (and a moved commit
        // index) that would not fill a message wait for an answer, then
        // leave together. The follower then runs one fsync per batch rather
        // than per `Ready` of the leader; with two in flight, the next batch
        // is already there when its fsync of the last one ends. Full
        // messages (a follower catching up) are still pipelined up to
        // `inflight_msgs_max`.
        if !force
            && pr.appends_in_flight() >= self.cfg.small_appends_inflight_max
            && !self
                .log
                .exceeds_bytes(pr.next_index, last, self.cfg.entries_bytes_max)
        {
            return false;
        }
        let prev_index = pr.next_index - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            // The follower needs entries compacted away behind a snapshot.
            self.send_snapshot(to);
            return true;
        };
        let entries = if has_entries {
            self.log
                .slice(pr.next_index, last, self.cfg.entries_bytes_max)
        } else {
            Vec::new()
        };
        let sent_last = entries.last().map_or(prev_index, |e| e.index);
        let pr = self.progress.get_mut(&to).expect("progress exists");
        pr.sent(sent_last);
        pr.commit_sent = committed;
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit: committed,
            },
        );
        true
    }

    /// Tells `to` to install the snapshot at the compaction point. The
    /// driver attaches the snapshot's data.
    fn send_snapshot(&mut self, to: NodeId) {
        let meta = SnapshotMeta {
            index: self.log.offset(),
            term: self
                .log
                .term(self.log.offset())
                .expect("the compaction point's term is kept"),
            // Membership never changes yet, so the current one is the one
            // at the snapshot's index.
            membership: self.membership.clone(),
        };
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent_snapshot(meta.index);
        }
        self.send(to, MessageBody::InstallSnapshot { meta });
    }

    /// Follower: the leader sent a snapshot (its data already staged by the
    /// driver). Installs it unless the log already covers it.
    pub(super) fn handle_snapshot(&mut self, leader: NodeId, meta: SnapshotMeta) {
        let committed = self.log.committed();
        if meta.index <= committed {
            self.send(
                leader,
                MessageBody::AppendResponse {
                    index: committed,
                    reject: None,
                },
            );
            return;
        }
        if self.log.matches(meta.index, meta.term) {
            // The log already holds the snapshot's last entry, so it holds
            // everything before it too: just learn that it is committed.
            self.log.commit_to(meta.index);
        } else {
            self.log.restore_snapshot(meta.index, meta.term);
            self.membership = meta.membership.clone();
            self.pending_snapshot = Some(meta.clone());
        }
        self.send(
            leader,
            MessageBody::AppendResponse {
                index: meta.index,
                reject: None,
            },
        );
    }

    /// The driver reports whether the snapshot sent to `to` arrived.
    pub(crate) fn report_snapshot(&mut self, to: NodeId, delivered: bool) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.snapshot_finished(delivered);
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let read_seq = self.reads.current_seq();
        let committed = self.log.committed();
        let peers: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .filter(|&(&id, _)| id != self.id)
            .map(|(&id, pr)| (id, pr.match_index))
            .collect();
        for (to, matched) in peers {
            // Never tell a follower to commit past what it is known to hold.
            let commit = committed.min(matched);
            self.send(to, MessageBody::Heartbeat { commit, read_seq });
        }
    }

    /// Follower: merge entries that follow a matching position, or reject
    /// with a hint of where to retry.
    pub(super) fn handle_append(
        &mut self,
        leader: NodeId,
        mut prev_index: Index,
        mut prev_term: Term,
        mut entries: Vec<Entry>,
        commit: Index,
    ) {
        let committed = self.log.committed();
        if prev_index < committed {
            // The prefix up to our commit index is identical to the leader's
            // (Log Matching); skip over it.
            let last = prev_index + entries.len() as Index;
            if last <= committed {
                self.send(
                    leader,
                    MessageBody::AppendResponse {
                        index: committed,
                        reject: None,
                    },
                );
                return;
            }
            entries.drain(..(committed - prev_index) as usize);
            prev_index = committed;
            prev_term = self
                .log
                .term(committed)
                .expect("the commit point is in the log");
        }
        if self.log.matches(prev_index, prev_term) {
            let last_new = prev_index + entries.len() as Index;
            if !entries.is_empty() {
                self.log.merge(entries);
            }
            self.log.commit_to(commit.min(last_new));
            self.send(
                leader,
                MessageBody::AppendResponse {
                    index: last_new,
                    reject: None,
                },
            );
        } else {
            let hint = self.reject_hint(prev_index);
            self.send(
                leader,
                MessageBody::AppendResponse {
                    index: prev_index,
                    reject: Some(hint),
                },
            );
        }
    }

    /// Where the leader should retry after we reject `prev_index`: skip our
    /// whole conflicting term at once instead of one entry per round trip.
    fn reject_hint(&self, prev_index: Index) -> RejectHint {
        let Some(conflict_term) = self.log.term(prev_index) else {
            return RejectHint {
                conflict_term: None,
                conflict_index: self.log.last_index() + 1,
            };
        };
        let floor = self.log.committed() + 1;
        let mut first = prev_index;
        while first > floor && self.log.term(first - 1) == Some(conflict_term) {
            first -= 1;
        }
        RejectHint {
            conflict_term: Some(conflict_term),
            conflict_index: first,
        }
    }

    pub(super) fn handle_heartbeat(&mut self, leader: NodeId, commit: Index, read_seq: u64) {
        self.log.commit_to(commit.min(self.log.last_index()));
        self.send(leader, MessageBody::HeartbeatResponse { read_seq });
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        index: Index,
        reject: Option<RejectHint>,
    ) -> Result<(), StepError> {
        let last = self.log.last_index();
        if index > last && reject.is_none() {
            return Err(StepError::Malformed {
                from,
                what: "AppendResponse",
                reason: "acknowledges an index beyond the leader's log",
            });
        }
        let retry_at = reject.map(|hint| self.retry_index(index, hint));
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.recent_active = true;
        match retry_at {
            None => {
                if pr.matched(index) {
                    self.maybe_commit();
                }
                if let Some((to, _)) = self.transfer
                    && to == from
                    && index == self.log.last_index()
                {
                    self.send(from, MessageBody::TimeoutNow);
                }
            }
            Some(retry_at) => {
                if pr.rejected(index, retry_at) {
                    self.send_append(from, true);
                }
            }
        }
        Ok(())
    }

    /// The leader's retry point after a rejection of `rejected`: just after
    /// the leader's last entry in the follower's conflicting term if the
    /// leader has that term, else the follower's first index in it.
    fn retry_index(&self, rejected: Index, hint: RejectHint) -> Index {
        let Some(term) = hint.conflict_term else {
            return hint.conflict_index;
        };
        // Terms never decrease along a log, so walk down from the rejected
        // position past the leader's later terms.
        let mut scan = rejected.min(self.log.last_index());
        while scan > self.log.offset() {
            match self.log.term(scan) {
                Some(t) if t > term => scan -= 1,
                Some(t) if t == term => return scan + 1,
                _ => break,
            }
        }
        hint.conflict_index
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        pr.read_seq_acked = pr.read_seq_acked.max(read_seq);
        if pr.heartbeat_answered() {
            // Appends were lost (the network drops messages; only a gap in
            // a later append would reveal it). Probe again from what the
            // follower is known to hold.
            pr.become_probe();
        }
        let behind = pr.match_index < self.log.last_index();
        if behind {
            self.send_append(from, false);
        }
        self.release_confirmed_reads();
    }

    /// The driver persisted the leader's own entries up to `index`.
    pub(crate) fn own_entries_persisted(&mut self, index: Index) {
        if self.role != Role::Leader {
            return;
        }
        let id = self.id;
        if let Some(pr) = self.progress.get_mut(&id)
            && pr.matched(index)
        {
            self.maybe_commit();
        }
    }

    /// Commits the highest index a quorum holds, if it is from this term.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let progress = &self.progress;
        let quorum_index = self
            .membership
            .quorum_value(|id| progress.get(&id).map_or(0, |p| p.match_index));
        let old = self.log.committed();
        if quorum_index <= old {
            return false;
        }
        let current_term = self.log.term(quorum_index) == Some(self.term);
        let unsafe_count =
            self.cfg.unsafe_negative_control == Some(NegativeControl::CommitOldTermByCount);
        if !current_term && !unsafe_count {
            // Figure 8: counting replicas of an older term's entry does not
            // make it committed.
            return false;
        }
        self.log.commit_to(quorum_index);
        let mut freed = 0;
        for index in old + 1..=quorum_index {
            if let Some(e) = self.log.entry(index)
                && e.term == self.term
            {
                freed += e.size_bytes();
            }
        }
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(freed);
        if current_term {
            self.committed_in_term = true;
        }
        true
    }

    /// Starts handing leadership to `to`: stop taking proposals, bring it up
    /// to date, then tell it to campaign at once.
    pub(crate) fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.membership.voters.contains(&to) {
            return Err(TransferError::NotAVoter(to));
        }
        if to == self.id {
            return Ok(());
        }
        self.transfer = Some((to, 0));
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, false);
        }
        Ok(())
    }

    /// The node a transfer is under way to, if any.
    pub(crate) fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|(to, _)| to)
    }
}
