//! Settings of one Raft node, with their defaults and checks.

use crate::error::ConfigError;
use crate::types::NodeId;

/// How a node behaves. Times are in ticks: the driver decides how long a
/// tick is (konsen-server uses `tick_ms`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id. Must be non-zero and a member of the initial voter set
    /// (or a learner, once membership changes exist).
    pub id: NodeId,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: u32,
    /// The minimum election timeout in ticks. Each node draws its timeout
    /// uniformly from `[election_ticks, 2 * election_ticks)` after every
    /// reset, so that split votes resolve. A candidate that sees the split
    /// (another candidate's request in its term) tries again sooner: after
    /// 1 tick if its id is the lower, after 3 if not.
    pub election_ticks: u32,
    /// Run a pre-vote round before raising the term (thesis 9.6), so that a
    /// node that was partitioned away cannot depose a healthy leader.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers that heard from a leader within the minimum
    /// election timeout refuse to vote for others (the leader lease).
    pub check_quorum: bool,
    /// When the driver reports that the connection to this follower's
    /// leader broke ([`crate::RawNode::report_peer_down`]), the follower
    /// campaigns within `1..=leader_down_ticks_max` ticks (drawn at random)
    /// instead of waiting out a full election timeout. 0 ignores reports.
    pub leader_down_ticks_max: u32,
    /// Unacknowledged append messages allowed in flight to one follower.
    pub inflight_msgs_max: usize,
    /// Bytes of entries carried by one append message (at least one entry is
    /// always sent, however large).
    pub entries_bytes_max: usize,
    /// Appends with entries that may be unacknowledged by one follower
    /// before new entries that would not fill a message wait for an answer
    /// (and then leave together). 1: a follower gets the next small append
    /// only once it answered the last, so it runs one fsync per batch; 2:
    /// the next one is on its way while the follower syncs the last. Full
    /// messages (a follower catching up) are pipelined up to
    /// `inflight_msgs_max` either way.
    pub small_appends_inflight_max: usize,
    /// Bytes of proposals the leader accepts that are not yet committed;
    /// past it proposals are refused with [`crate::ProposeError::Backpressure`].
    pub uncommitted_bytes_max: usize,
    /// Read requests waiting for leadership confirmation on one node.
    pub pending_reads_max: usize,
    /// Committed entries handed out in one [`crate::Ready`], in bytes.
    pub apply_bytes_max: usize,
    /// How many of its own `Ready`s with entries a leader lets a quorum of
    /// its followers lag behind, at most, while it writes new entries
    /// without syncing them ([`crate::Ready::must_sync`] false). The
    /// leader need not be part of the majority that commits an entry
    /// (thesis 10.2.1): it counts its own entries only once a synced write
    /// covers them, so while a quorum of followers keeps up, entries commit
    /// on their disks and the leader's fsyncs are spared. A follower that
    /// falls further behind, or stops answering (noticed at the latest one
    /// tick later), and the leader syncs again. 0: the leader syncs every
    /// append, like a follower.
    pub lazy_sync_lag_max: u32,
    /// Seed for the election-timeout randomness. The same seed and inputs
    /// give the same outputs.
    pub seed: u64,
    /// Breaks one safety rule on purpose. Only the simulator's negative
    /// control tests set this; it exists to show that the checks bite.
    #[doc(hidden)]
    pub unsafe_negative_control: Option<NegativeControl>,
}

/// A deliberately broken safety rule, for negative-control tests only.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegativeControl {
    /// Grant votes without checking that the candidate's log is at least as
    /// up to date as the voter's (breaks the election restriction, §5.4.1).
    VoteWithoutLogCheck,
    /// Commit by counting replicas of an entry from an older term
    /// (breaks §5.4.2, the Figure 8 rule).
    CommitOldTermByCount,
    /// A leader counts its own entries towards commitment as soon as they
    /// are written, synced or not (an entry may then commit on fewer disks
    /// than a quorum, and a power loss can take it).
    CountUnsyncedOwnEntries,
}

impl Config {
    /// Defaults for node `id`: heartbeat every tick, elections after 10 to 20
    /// ticks (with a 100 ms tick: 100 ms and 1–2 s, like etcd).
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            heartbeat_ticks: 1,
            election_ticks: 10,
            pre_vote: true,
            check_quorum: true,
            leader_down_ticks_max: 3,
            inflight_msgs_max: 256,
            entries_bytes_max: 1024 * 1024,
            small_appends_inflight_max: 2,
            uncommitted_bytes_max: 64 * 1024 * 1024,
            pending_reads_max: 65_536,
            apply_bytes_max: 16 * 1024 * 1024,
            lazy_sync_lag_max: 16,
            seed: id,
            unsafe_negative_control: None,
        }
    }

    /// Checks the settings, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ConfigError {
                field,
                reason: reason.to_string(),
            })
        };
        if self.id == 0 {
            return bad("id", "must be non-zero");
        }
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks", "must be at least 1");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return bad(
                "election_ticks",
                "must be greater than heartbeat_ticks, or followers time out between heartbeats",
            );
        }
        if self.leader_down_ticks_max >= self.election_ticks {
            return bad(
                "leader_down_ticks_max",
                "must be less than election_ticks, or a report of a lost leader slows elections down",
            );
        }
        if self.inflight_msgs_max == 0 {
            return bad("inflight_msgs_max", "must be at least 1");
        }
        if self.small_appends_inflight_max == 0
            || self.small_appends_inflight_max > self.inflight_msgs_max
        {
            return bad(
                "small_appends_inflight_max",
                "must be at least 1 and at most inflight_msgs_max",
            );
        }
        if self.entries_bytes_max == 0 {
            return bad("entries_bytes_max", "must be at least 1");
        }
        if self.uncommitted_bytes_max == 0 {
            return bad("uncommitted_bytes_max", "must be at least 1");
        }
        if self.pending_reads_max == 0 {
            return bad("pending_reads_max", "must be at least 1");
        }
        if self.apply_bytes_max == 0 {
            return bad("apply_bytes_max", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_appends_in_flight_lie_between_one_and_the_inflight_limit() {
        let mut config = Config::new(1);
        assert!(config.validate().is_ok());
        for bad in [0, config.inflight_msgs_max + 1] {
            config.small_appends_inflight_max = bad;
            let e = config.validate().unwrap_err();
            assert_eq!(e.field, "small_appends_inflight_max", "{bad}");
        }
        config.small_appends_inflight_max = config.inflight_msgs_max;
        assert!(config.validate().is_ok());
    }
}
