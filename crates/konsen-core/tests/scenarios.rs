//! Scenario tests: scripts in `tests/scenarios/` drive a small cluster step
//! by step and the output, a transcript of every message and state change,
//! must match the expected output stored in the script (goldenscript).
//! After changing the core, regenerate with `UPDATE_GOLDENFILES=1` and
//! review the diff as you would review a change to the protocol.
//!
//! Commands:
//! * `cluster N [pre_vote=BOOL] [check_quorum=BOOL] [entries_bytes_max=N]
//!   [lazy_sync_lag_max=N] [unsafe_commit_old_term=BOOL]`: a fresh cluster
//!   (the last one breaks the commitment rule on purpose, as a negative
//!   control).
//! * `campaign ID`: node ID starts an election now.
//! * `down ID PEER`: ID's driver reports its connection to PEER broken.
//! * `tick ID [times=N]`: advances ID's clock (no delivery).
//! * `stabilize`: persist, deliver and apply until nothing moves.
//! * `step`: one round of that: every node's Ready once, then the messages
//!   queued so far.
//! * `propose ID DATA`, `read ID CTX`, `transfer ID TO`.
//! * `partition ID...`: cuts the given nodes off from the others.
//! * `cut A B`: cuts the link between A and B, both ways.
//! * `heal`: removes every cut.
//! * `compact ID INDEX`: ID snapshots its state at INDEX and forgets the
//!   log up to it.
//! * `status`, `log ID`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::error::Error;
use std::fmt::Write as _;

use bytes::Bytes;
use konsen_core::storage::{MemStorage, Storage};
use konsen_core::{
    Config, Index, Membership, Message, MessageBody, NegativeControl, NodeId, RawNode,
    RestoredState, Term,
};

#[derive(goldenscript::Command)]
enum Command {
    Cluster {
        nodes: u64,
        #[arg(key)]
        pre_vote: Option<bool>,
        #[arg(key)]
        check_quorum: Option<bool>,
        /// Bytes of entries per append (1: one entry per message).
        #[arg(key)]
        entries_bytes_max: Option<usize>,
        /// `Config::lazy_sync_lag_max`.
        #[arg(key)]
        lazy_sync_lag_max: Option<u32>,
        /// Negative control: commit old-term entries by counting replicas.
        #[arg(key)]
        unsafe_commit_old_term: Option<bool>,
    },
    Campaign(NodeId),
    Down(NodeId, NodeId),
    Tick {
        node: NodeId,
        #[arg(key)]
        times: Option<u32>,
    },
    Stabilize,
    Propose(NodeId, String),
    Read(NodeId, u64),
    Transfer(NodeId, NodeId),
    Partition(Vec<NodeId>),
    Cut(NodeId, NodeId),
    Heal,
    Step,
    Status,
    Log(NodeId),
    Compact(NodeId, u64),
}

#[derive(Default)]
struct Cluster {
    nodes: Vec<(RawNode, MemStorage)>,
    /// Nodes that wrote entries without a sync since their last synced write.
    unsynced: BTreeSet<NodeId>,
    /// What was applied at each index, by any node (State Machine Safety).
    applied: BTreeMap<Index, (Term, Bytes)>,
    queue: VecDeque<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Cluster {
    fn node(&mut self, id: NodeId) -> Result<&mut RawNode, Box<dyn Error>> {
        let n = self.nodes.len() as u64;
        if id == 0 || id > n {
            return Err(format!("no node {id}").into());
        }
        Ok(&mut self.nodes[(id - 1) as usize].0)
    }

    /// Handles every node's Ready, then delivers queued messages, until
    /// quiet. Writes what happens to `out`.
    fn stabilize(&mut self, out: &mut String) -> Result<(), Box<dyn Error>> {
        for _ in 0..1000 {
            if !self.round(out)? {
                return Ok(());
            }
        }
        Err("cluster did not stabilize".into())
    }

    /// One round: each node's Ready, then the messages queued so far.
    /// Returns whether anything happened.
    fn round(&mut self, out: &mut String) -> Result<bool, Box<dyn Error>> {
        let mut moved = false;
        for (raw, disk) in &mut self.nodes {
            while raw.has_ready() {
                moved = true;
                let ready = raw.ready();
                let id = raw.id();
                if let Some(s) = ready.soft_state {
                    writeln!(
                        out,
                        "n{id} is {:?} in term {} (leader {})",
                        s.role,
                        s.term,
                        fmt_id(s.leader)
                    )?;
                }
                if let Some(meta) = &ready.snapshot {
                    writeln!(
                        out,
                        "n{id} installs the snapshot at {}@{}",
                        meta.index, meta.term
                    )?;
                    disk.install_snapshot(meta.index, meta.term);
                }
                if ready.must_sync {
                    if ready.entries.is_empty() && self.unsynced.contains(&id) {
                        writeln!(out, "n{id} syncs what it wrote unsynced")?;
                    }
                    self.unsynced.remove(&id);
                    disk.append(ready.hard_state, &ready.entries)?;
                } else if let (Some(first), Some(last)) =
                    (ready.entries.first(), ready.entries.last())
                {
                    writeln!(
                        out,
                        "n{id} writes {}..={} without a sync",
                        first.index, last.index
                    )?;
                    self.unsynced.insert(id);
                    disk.append_unsynced(ready.hard_state, &ready.entries)?;
                } else if let Some(hs) = ready.hard_state {
                    disk.store_commit(hs)?;
                }
                for e in &ready.committed_entries {
                    writeln!(
                        out,
                        "n{id} applies {}@{} {}",
                        e.index,
                        e.term,
                        fmt_data(&e.data)
                    )?;
                    let first = self
                        .applied
                        .entry(e.index)
                        .or_insert((e.term, e.data.clone()));
                    if *first != (e.term, e.data.clone()) {
                        writeln!(
                            out,
                            "SAFETY VIOLATION: n{id} applies {}@{} where {}@{} {} was applied before",
                            e.index,
                            e.term,
                            e.index,
                            first.0,
                            fmt_data(&first.1)
                        )?;
                    }
                }
                for r in &ready.read_states {
                    writeln!(
                        out,
                        "n{id} may serve read {} once index {} is applied",
                        r.ctx, r.index
                    )?;
                }
                for r in &ready.read_failures {
                    writeln!(out, "n{id} fails read {}", r.ctx)?;
                }
                self.queue.extend(ready.messages);
                raw.advance();
            }
        }
        for m in std::mem::take(&mut self.queue) {
            moved = true;
            if self.cut.contains(&(m.from, m.to)) {
                writeln!(
                    out,
                    "n{} -> n{} {} dropped (partition)",
                    m.from,
                    m.to,
                    m.body.name()
                )?;
                continue;
            }
            writeln!(out, "{}", fmt_msg(&m))?;
            let (from, to) = (m.from, m.to);
            let snapshot = matches!(m.body, MessageBody::InstallSnapshot { .. });
            if let Err(e) = self.node(to)?.step(m) {
                writeln!(out, "n{to} drops it: {e}")?;
            }
            if snapshot {
                // The transport reports the transfer's outcome.
                self.node(from)?.report_snapshot(to, true);
            }
        }
        Ok(moved)
    }
}

fn fmt_id(id: Option<NodeId>) -> String {
    id.map_or("none".into(), |id| format!("n{id}"))
}

fn fmt_data(data: &Bytes) -> String {
    if data.is_empty() {
        "(no-op)".into()
    } else {
        format!("{:?}", String::from_utf8_lossy(data))
    }
}

fn fmt_msg(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => format!("PreVote last={last_index}@{last_term}"),
        MessageBody::PreVoteResponse { granted } => format!("PreVoteResponse granted={granted}"),
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            format!(
                "Vote last={last_index}@{last_term}{}",
                if *transfer { " transfer" } else { "" }
            )
        }
        MessageBody::VoteResponse { granted } => format!("VoteResponse granted={granted}"),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            let list: Vec<String> = entries
                .iter()
                .map(|e| format!("{}@{}", e.index, e.term))
                .collect();
            format!(
                "Append prev={prev_index}@{prev_term} entries=[{}] commit={commit}",
                list.join(" ")
            )
        }
        MessageBody::AppendResponse {
            index,
            reject: None,
        } => format!("AppendResponse ok index={index}"),
        MessageBody::AppendResponse {
            index,
            reject: Some(h),
        } => format!(
            "AppendResponse reject index={index} hint: conflict_term={} conflict_index={}",
            h.conflict_term.map_or("none".into(), |t| t.to_string()),
            h.conflict_index
        ),
        MessageBody::Heartbeat { commit, read_seq } => {
            format!("Heartbeat commit={commit} read_seq={read_seq}")
        }
        MessageBody::HeartbeatResponse { read_seq } => {
            format!("HeartbeatResponse read_seq={read_seq}")
        }
        MessageBody::ReadIndex { ctx } => format!("ReadIndex ctx={ctx}"),
        MessageBody::ReadIndexResponse { ctx, index } => {
            format!(
                "ReadIndexResponse ctx={ctx} index={}",
                index.map_or("refused".into(), |i| i.to_string())
            )
        }
        MessageBody::TimeoutNow => "TimeoutNow".into(),
        MessageBody::InstallSnapshot { meta } => {
            format!("InstallSnapshot index={} term={}", meta.index, meta.term)
        }
    };
    format!("n{} -> n{} term {} {body}", m.from, m.to, m.term)
}

#[derive(Default)]
struct Runner {
    cluster: Cluster,
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(
        &mut self,
        command: &Command,
        _: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        let c = &mut self.cluster;
        match command {
            Command::Cluster {
                nodes,
                pre_vote,
                check_quorum,
                entries_bytes_max,
                lazy_sync_lag_max,
                unsafe_commit_old_term,
            } => {
                *c = Cluster::default();
                for id in 1..=*nodes {
                    let mut config = Config::new(id);
                    config.pre_vote = pre_vote.unwrap_or(true);
                    config.check_quorum = check_quorum.unwrap_or(true);
                    if let Some(max) = entries_bytes_max {
                        config.entries_bytes_max = *max;
                    }
                    if let Some(lag) = lazy_sync_lag_max {
                        config.lazy_sync_lag_max = *lag;
                    }
                    if unsafe_commit_old_term == &Some(true) {
                        config.unsafe_negative_control =
                            Some(NegativeControl::CommitOldTermByCount);
                    }
                    let restored = RestoredState {
                        membership: Membership::with_voters(1..=*nodes),
                        ..Default::default()
                    };
                    c.nodes
                        .push((RawNode::new(config, restored)?, MemStorage::new()));
                }
            }
            Command::Campaign(id) => c.node(*id)?.campaign(),
            Command::Down(id, peer) => c.node(*id)?.report_peer_down(*peer),
            Command::Tick { node, times } => {
                for _ in 0..times.unwrap_or(1) {
                    c.node(*node)?.tick();
                }
            }
            Command::Stabilize => c.stabilize(&mut out)?,
            Command::Propose(id, data) => match c.node(*id)?.propose(Bytes::from(data.clone())) {
                Ok(index) => writeln!(out, "n{id} accepts the proposal at index {index}")?,
                Err(e) => writeln!(out, "n{id} refuses the proposal: {e}")?,
            },
            Command::Read(id, ctx) => {
                if let Err(e) = c.node(*id)?.read_index(*ctx) {
                    writeln!(out, "n{id} refuses read {ctx}: {e}")?;
                }
            }
            Command::Transfer(id, to) => {
                if let Err(e) = c.node(*id)?.transfer_leader(*to) {
                    writeln!(out, "n{id} refuses transfer: {e}")?;
                }
            }
            Command::Partition(ids) => {
                let n = c.nodes.len() as u64;
                for &a in ids {
                    for b in (1..=n).filter(|b| !ids.contains(b)) {
                        c.cut.insert((a, b));
                        c.cut.insert((b, a));
                    }
                }
            }
            Command::Cut(a, b) => {
                c.cut.insert((*a, *b));
                c.cut.insert((*b, *a));
            }
            Command::Heal => c.cut.clear(),
            Command::Step => {
                c.round(&mut out)?;
            }
            Command::Status => {
                for (raw, _) in &c.nodes {
                    let s = raw.status();
                    writeln!(
                        out,
                        "n{}: {:?} term {} leader {} last {} commit {} applied {}",
                        s.id,
                        s.role,
                        s.term,
                        fmt_id(s.leader),
                        s.last_index,
                        s.commit,
                        s.applied
                    )?;
                }
            }
            Command::Compact(id, index) => {
                let (raw, disk) = &mut c.nodes[(*id - 1) as usize];
                match raw.compact(*index) {
                    Ok(()) => {
                        disk.purge(*index)?;
                        writeln!(out, "n{id} compacts its log up to {index}")?;
                    }
                    Err(e) => writeln!(out, "n{id} refuses to compact: {e}")?,
                }
            }
            Command::Log(id) => {
                let raw = c.node(*id)?;
                let log = raw.log();
                let entries: Vec<String> = (log.first_index()..=log.last_index())
                    .filter_map(|i| log.entry(i))
                    .map(|e| format!("{}@{} {}", e.index, e.term, fmt_data(&e.data)))
                    .collect();
                writeln!(
                    out,
                    "n{id} log: {}",
                    if entries.is_empty() {
                        "(empty)".into()
                    } else {
                        entries.join(", ")
                    }
                )?;
            }
        }
        Ok(out)
    }
}

macro_rules! scenario {
    ($name:ident) => {
        #[test]
        fn $name() -> std::io::Result<()> {
            goldenscript::run(
                &mut Runner::default(),
                concat!("tests/scenarios/", stringify!($name)),
            )
        }
    };
}

scenario!(election);
scenario!(split_vote);
scenario!(split_vote_retry);
scenario!(pre_vote_rejoin);
scenario!(leader_down);
scenario!(check_quorum);
scenario!(log_repair);
scenario!(read_index);
scenario!(leader_transfer);
scenario!(snapshot);
scenario!(figure_8);
scenario!(figure_8_safe);
scenario!(lazy_sync);
