//! The leader's view of each follower's log: how far it matches, what to
//! send next, and how many appends are in flight (flow control).

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's position is unknown: send one append, wait for the
    /// answer (or the next heartbeat answer) before sending another.
    Probe,
    /// The follower is keeping up: stream appends optimistically, up to
    /// `inflight_msgs_max` unacknowledged.
    Replicate,
    /// A snapshot up to `pending` is being sent; nothing else is until it
    /// is acknowledged or reported failed.
    Snapshot { pending: Index },
}

/// Replication state of one follower, kept by the leader.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log.
    pub match_index: Index,
    /// The next index to send.
    pub next_index: Index,
    pub state: ProgressState,
    /// In `Probe`: an append was sent and no answer has come yet.
    pub probe_sent: bool,
    /// In `Replicate`: the last index of each unacknowledged append, oldest
    /// first.
    inflight: VecDeque<Index>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The highest ReadIndex round this follower has confirmed.
    pub read_seq_acked: u64,
    /// The commit index last sent in an append.
    pub commit_sent: Index,
    /// `match_index` at the previous heartbeat answer, to notice lost appends.
    match_at_heartbeat: Option<Index>,
}

impl Progress {
    /// A follower the leader knows nothing about yet: probe from the end of
    /// the leader's log.
    pub fn new(next_index: Index) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            read_seq_acked: 0,
            commit_sent: 0,
            match_at_heartbeat: None,
        }
    }

    /// Whether the leader must hold further appends to this follower.
    pub fn is_paused(&self, inflight_msgs_max: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= inflight_msgs_max,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records that an append ending at `last` was sent. Only appends
    /// that carry entries count as in flight: one that only moves the
    /// commit index needs no acknowledgement.
    pub fn sent(&mut self, last: Index) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate if last >= self.next_index => {
                self.next_index = last + 1;
                self.inflight.push_back(last);
            }
            ProgressState::Replicate | ProgressState::Snapshot { .. } => {}
        }
    }

    /// Records that a snapshot up to `index` is on its way.
    pub fn sent_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot { pending: index };
        self.inflight.clear();
    }

    /// The driver finished sending the snapshot, successfully or not. Probe
    /// next: after the snapshot if it arrived (the follower's answer will
    /// confirm it was installed), else from what the follower holds (which
    /// sends a fresh snapshot if one is still needed).
    pub fn snapshot_finished(&mut self, delivered: bool) {
        if let ProgressState::Snapshot { pending } = self.state {
            self.become_probe();
            if delivered {
                self.next_index = self.next_index.max(pending + 1);
            }
        }
    }

    /// The follower matches up to `index`. Returns whether that was news.
    pub fn matched(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index + 1);
        self.probe_sent = false;
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        match self.state {
            ProgressState::Probe => self.become_replicate(),
            ProgressState::Snapshot { pending } if self.match_index >= pending => {
                self.become_replicate()
            }
            _ => {}
        }
        updated
    }

    /// The follower rejected an append at `rejected`; `retry_at` is where the
    /// leader should try next. Returns false if the rejection is stale.
    pub fn rejected(&mut self, rejected: Index, retry_at: Index) -> bool {
        if rejected <= self.match_index {
            // An answer to an old append, overtaken by a later success.
            return false;
        }
        match self.state {
            ProgressState::Snapshot { .. } => return false,
            ProgressState::Replicate => {
                self.become_probe();
                self.next_index = retry_at.max(self.match_index + 1);
            }
            ProgressState::Probe => {
                // Only the answer to the latest probe matters.
                if rejected != self.next_index - 1 {
                    return false;
                }
                self.next_index = retry_at.clamp(self.match_index + 1, self.next_index);
                self.probe_sent = false;
            }
        }
        true
    }

    /// Records a heartbeat answer. Returns whether replication looks
    /// stalled: appends are in flight, yet nothing was acknowledged for a
    /// whole heartbeat interval, so they were most likely lost.
    pub fn heartbeat_answered(&mut self) -> bool {
        let stalled = self.state == ProgressState::Replicate
            && !self.inflight.is_empty()
            && self.match_at_heartbeat == Some(self.match_index);
        self.match_at_heartbeat = Some(self.match_index);
        stalled
    }

    /// Back to probing (on rejection, or when the follower was unreachable).
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.next_index = self.match_index + 1;
    }

    fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
    }

    /// Appends with entries on their way and unacknowledged, while
    /// replicating (new entries may then wait for an answer, see
    /// `send_append`).
    pub fn appends_in_flight(&self) -> usize {
        match self.state {
            ProgressState::Replicate => self.inflight.len(),
            ProgressState::Probe | ProgressState::Snapshot { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_pauses_until_answer_then_replicates() {
        let mut p = Progress::new(6);
        assert!(!p.is_paused(4));
        p.sent(5);
        assert!(p.is_paused(4), "a probe waits for its answer");
        assert!(p.rejected(5, 3));
        assert_eq!(p.next_index, 3);
        assert!(!p.is_paused(4));
        p.sent(5);
        p.matched(5);
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!(p.next_index, 6);
    }

    #[test]
    fn replicate_limits_inflight_and_frees_on_ack() {
        let mut p = Progress::new(1);
        p.matched(0);
        for last in [2, 4, 6] {
            p.sent(last);
        }
        assert!(p.is_paused(3));
        p.matched(4);
        assert_eq!(p.appends_in_flight(), 1);
        assert!(!p.is_paused(3));
        assert_eq!(p.next_index, 7);
        // An append that only moves the commit index is not tracked.
        p.matched(6);
        p.sent(6);
        assert_eq!(p.appends_in_flight(), 0);
        p.sent(8);
        assert_eq!(p.appends_in_flight(), 1);
    }

    #[test]
    fn lost_appends_are_noticed_at_the_second_heartbeat() {
        let mut p = Progress::new(1);
        p.matched(3);
        p.sent(5);
        assert!(
            !p.heartbeat_answered(),
            "the first answer only sets a baseline"
        );
        assert!(p.heartbeat_answered(), "no progress for a whole interval");
        p.matched(5);
        assert!(!p.heartbeat_answered(), "nothing in flight");
    }

    #[test]
    fn stale_rejection_is_ignored() {
        let mut p = Progress::new(1);
        p.matched(5);
        assert!(!p.rejected(3, 1));
        assert_eq!(p.state, ProgressState::Replicate);
    }
}
