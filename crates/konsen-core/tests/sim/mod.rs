//! A deterministic, seeded simulator of a Raft cluster in one thread.
//!
//! Nodes are `RawNode`s with an in-memory "disk" (`MemStorage`). The network
//! delays, drops, duplicates and reorders messages and can be partitioned,
//! symmetrically or one way. Nodes crash (losing everything not persisted,
//! sometimes between sending a leader's early appends and persisting them)
//! and restart from their disk. Clients propose puts and compare-and-swaps
//! on a few keys (`kv`), ask for ReadIndex reads and leader transfers.
//!
//! After every step the checker verifies the safety properties of Raft
//! (paper Figure 3) and ReadIndex linearizability; after the faults heal it
//! checks liveness. Everything is driven by one seed, so a failure replays
//! exactly.

pub mod checker;
pub mod kv;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use bytes::Bytes;
use konsen_core::storage::{MemStorage, Storage};
use konsen_core::{
    Config, Index, Membership, Message, MessageBody, NegativeControl, NodeId, RawNode,
    RestoredState, Role, Term,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use checker::Checker;
use kv::{Command, Outcome, ToyKv};

/// Steps per tick: message delays are counted in steps, so most messages
/// arrive within a tick, as on a real network.
const STEPS_PER_TICK: u64 = 10;
/// Ticks of faults before the final heal.
pub const FAULT_TICKS: u64 = 1500;
/// After healing, ticks allowed until one leader is agreed on.
pub const ELECT_BOUND_TICKS: u64 = 200;
/// After a leader is agreed on, ticks allowed for proposals to commit and
/// be applied on every node.
pub const COMMIT_BOUND_TICKS: u64 = 100;
/// Events kept for the failure report.
const TRACE_MAX: usize = 60;
/// Proposals made after the heal, which must all commit.
const FINAL_PROPOSALS: usize = 5;

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub nodes: u64,
    pub seed: u64,
    pub negative_control: Option<NegativeControl>,
    /// A state machine bug, not a core one, for the negative control of the
    /// state check: node 1 applies compare-and-swaps without comparing.
    pub cas_bug: bool,
}

/// A safety or liveness violation, with what led to it.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub nodes: u64,
    pub negative_control: Option<NegativeControl>,
    pub message: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "violation with seed {} ({} nodes): {}",
            self.seed, self.nodes, self.message
        )?;
        match self.negative_control {
            Some(control) => writeln!(f, "(negative control on: {control:?})")?,
            None => writeln!(
                f,
                "replay: KONSEN_SIM_SEED={} KONSEN_SIM_NODES={} cargo test --release -p konsen-core --test simulation replay -- --ignored --nocapture",
                self.seed, self.nodes
            )?,
        }
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

struct SimNode {
    id: NodeId,
    raw: Option<RawNode>,
    disk: MemStorage,
    restarts: u64,
    /// The state machine. Volatile: lost in a crash.
    state: ToyKv,
    /// The last snapshot taken or installed. Durable, like the disk.
    snapshot: Option<Snapshot>,
    /// A snapshot received from the leader, waiting for the core to accept it.
    staged: Option<Snapshot>,
}

/// A snapshot: the state machine at `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    index: Index,
    term: Term,
    state: ToyKv,
}

/// A message on the wire, ordered by delivery step then send order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: u64,
    seq: u64,
    msg: WireMsg,
}

/// A message and, for `InstallSnapshot`, the snapshot sent beside it.
#[derive(PartialEq, Eq)]
struct WireMsg(Message, Option<Snapshot>);

impl PartialOrd for WireMsg {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for WireMsg {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

pub struct Sim {
    opts: SimOptions,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    net: BinaryHeap<Reverse<InFlight>>,
    send_seq: u64,
    step_no: u64,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    loss: f64,
    dup: f64,
    /// Whether faults are still being injected (false after the heal).
    faults_on: bool,
    next_value: u64,
    next_ctx: u64,
    checker: Checker,
    trace: VecDeque<String>,
    /// Counters for the report.
    pub stats: Stats,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub crashes: u64,
    pub partitions: u64,
    pub proposals_accepted: u64,
    pub entries_committed: u64,
    pub reads_served: u64,
    pub transfers: u64,
    pub compactions: u64,
    pub snapshots_installed: u64,
    /// Compare-and-swaps committed that wrote, and that found another
    /// mod index (counted once per index, not per node).
    pub cas_written: u64,
    pub cas_failed: u64,
    /// Leader `Ready`s whose entries were written without a sync.
    pub unsynced_appends: u64,
    /// Entries a crash took from a disk before any sync covered them.
    pub unsynced_entries_lost: u64,
}

impl Sim {
    pub fn new(opts: SimOptions) -> Self {
        let mut rng = SmallRng::seed_from_u64(opts.seed);
        let loss = rng.random_range(0.0..0.10);
        let dup = rng.random_range(0.0..0.05);
        let mut sim = Sim {
            nodes: Vec::new(),
            net: BinaryHeap::new(),
            send_seq: 0,
            step_no: 0,
            cut: BTreeSet::new(),
            loss,
            dup,
            faults_on: true,
            next_value: 0,
            next_ctx: 0,
            checker: Checker::new(),
            trace: VecDeque::new(),
            stats: Stats::default(),
            rng,
            opts,
        };
        for id in 1..=sim.opts.nodes {
            sim.nodes.push(SimNode {
                id,
                raw: None,
                disk: MemStorage::new(),
                restarts: 0,
                state: ToyKv::default(),
                snapshot: None,
                staged: None,
            });
            sim.start(id);
        }
        sim
    }

    fn membership(&self) -> Membership {
        Membership::with_voters(1..=self.opts.nodes)
    }

    fn start(&mut self, id: NodeId) {
        let membership = self.membership();
        let node = &mut self.nodes[(id - 1) as usize];
        let stored = node.disk.load().expect("memory storage loads");
        let mut config = Config::new(id);
        config.seed = self
            .opts
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(id * 7919 + node.restarts);
        config.inflight_msgs_max = 4;
        config.entries_bytes_max = 256;
        // The default lag, short lags (the leader's appends go unsynced,
        // and back to synced, far more often), and no unsynced appends.
        config.lazy_sync_lag_max = [16, 1, 2, 0][(self.opts.seed % 4) as usize];
        // The default, one small append in flight, and three.
        config.small_appends_inflight_max = [2, 1, 3][(self.opts.seed / 4 % 3) as usize];
        config.unsafe_negative_control = self.opts.negative_control;
        // The state machine restarts from the last snapshot, if any.
        node.state = node
            .snapshot
            .as_ref()
            .map_or_else(ToyKv::default, |s| s.state.clone());
        node.staged = None;
        let restored = RestoredState {
            hard_state: stored.hard_state,
            membership,
            snapshot_index: stored.purged_index,
            snapshot_term: stored.purged_term,
            entries: stored.entries,
            applied: node.state.applied(),
        };
        node.raw = Some(RawNode::new(config, restored).expect("restored state is valid"));
        node.restarts += 1;
        let applied = node.state.applied();
        self.checker.node_restarted(id, applied);
    }

    fn crash(&mut self, id: NodeId) {
        let node = &mut self.nodes[(id - 1) as usize];
        node.raw = None;
        // A crash here is a power loss: unsynced writes are gone.
        self.stats.unsynced_entries_lost += node.disk.lose_unsynced() as u64;
        self.stats.crashes += 1;
        self.event(format!("crash n{id}"));
        // Most peers see the dead node's connections break (those cut off
        // by a partition do not).
        for peer in self.live() {
            if self.rng.random_bool(0.8) {
                self.report_peer_down(peer, id);
            }
        }
    }

    /// `at` is told that its connection to `peer` broke.
    fn report_peer_down(&mut self, at: NodeId, peer: NodeId) {
        if let Some(raw) = self.nodes[(at - 1) as usize].raw.as_mut() {
            raw.report_peer_down(peer);
        }
    }

    fn event(&mut self, line: String) {
        if self.trace.len() == TRACE_MAX {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("[tick {}] {line}", self.step_no / STEPS_PER_TICK));
    }

    fn live(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.raw.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn violation(&self, message: String) -> Violation {
        Violation {
            seed: self.opts.seed,
            nodes: self.opts.nodes,
            negative_control: self.opts.negative_control,
            message,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    /// Runs faults, heals, and checks liveness.
    pub fn run(&mut self) -> Result<(), Violation> {
        for _ in 0..FAULT_TICKS * STEPS_PER_TICK {
            self.step(true)?;
        }
        self.heal();
        // Liveness 1: one leader that every node follows.
        let mut leader = None;
        for _ in 0..ELECT_BOUND_TICKS * STEPS_PER_TICK {
            self.step(false)?;
            leader = self.agreed_leader();
            if leader.is_some() {
                break;
            }
        }
        let Some(leader) = leader else {
            return Err(self.violation(format!(
                "liveness: no agreed leader within {ELECT_BOUND_TICKS} ticks after healing"
            )));
        };
        // Liveness 2: proposals at that leader commit and apply everywhere.
        let mut targets = Vec::new();
        for _ in 0..FINAL_PROPOSALS {
            let value = self.fresh_command(leader);
            let raw = self.nodes[(leader - 1) as usize]
                .raw
                .as_mut()
                .expect("leader is live");
            match raw.propose(value) {
                Ok(index) => targets.push(index),
                Err(e) => {
                    return Err(self.violation(format!(
                        "liveness: agreed leader n{leader} refused a proposal: {e}"
                    )));
                }
            }
        }
        let want = *targets.last().expect("proposed");
        for _ in 0..COMMIT_BOUND_TICKS * STEPS_PER_TICK {
            self.step(false)?;
            if self
                .nodes
                .iter()
                .all(|n| self.checker.applied(n.id) >= want)
            {
                return Ok(());
            }
        }
        Err(self.violation(format!(
            "liveness: proposals up to index {want} not applied on every node within {COMMIT_BOUND_TICKS} ticks; {}",
            self.describe()
        )))
    }

    /// Every node's role, term and log positions, for failure reports.
    fn describe(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            match &n.raw {
                Some(raw) => {
                    let s = raw.status();
                    out.push_str(&format!(
                        "\n  n{}: {:?} term {} leader {:?} last {} commit {} applied(core) {} applied(sim) {}",
                        n.id,
                        s.role,
                        s.term,
                        s.leader,
                        s.last_index,
                        s.commit,
                        s.applied,
                        self.checker.applied(n.id)
                    ));
                }
                None => out.push_str(&format!("\n  n{}: down", n.id)),
            }
        }
        out
    }

    fn heal(&mut self) {
        self.event("heal all faults".into());
        self.faults_on = false;
        self.cut.clear();
        self.loss = 0.0;
        self.dup = 0.0;
        for id in 1..=self.opts.nodes {
            if self.nodes[(id - 1) as usize].raw.is_none() {
                self.start(id);
            }
        }
    }

    fn agreed_leader(&self) -> Option<NodeId> {
        let leader = self.nodes[0].raw.as_ref()?.leader()?;
        let lead = self.nodes[(leader - 1) as usize].raw.as_ref()?;
        if lead.role() != Role::Leader || lead.status().transfer_target.is_some() {
            return None;
        }
        let term = lead.term();
        self.nodes
            .iter()
            .all(|n| {
                n.raw
                    .as_ref()
                    .is_some_and(|r| r.leader() == Some(leader) && r.term() == term)
            })
            .then_some(leader)
    }

    /// A command for a client at node `id`: a put, or a compare-and-swap
    /// against the mod index the node's own state shows for the key (a
    /// follower's may be stale, so some fail, as clients' do).
    fn fresh_command(&mut self, id: NodeId) -> Bytes {
        self.next_value += 1;
        let key = format!("k{}", self.rng.random_range(0..kv::KEYS));
        let value = format!("v{}", self.next_value);
        let command = if self.rng.random_bool(0.5) {
            Command::Put { key, value }
        } else {
            let expected_mod = self.nodes[(id - 1) as usize].state.mod_index(&key);
            Command::Cas {
                key,
                expected_mod,
                value,
            }
        };
        command.encode()
    }

    /// One step: maybe a fault, maybe client requests, a tick every
    /// `STEPS_PER_TICK` steps, message delivery, and every node's `Ready`s.
    fn step(&mut self, faults: bool) -> Result<(), Violation> {
        self.step_no += 1;
        if faults {
            self.inject_faults();
        }
        self.client_requests();
        if self.step_no.is_multiple_of(STEPS_PER_TICK) {
            for id in self.live() {
                self.nodes[(id - 1) as usize]
                    .raw
                    .as_mut()
                    .expect("live")
                    .tick();
            }
        }
        self.deliver()?;
        for id in self.live() {
            self.process_ready(id)?;
        }
        self.check_all()
    }

    fn inject_faults(&mut self) {
        let n = self.opts.nodes;
        let r: f64 = self.rng.random();
        let live = self.live();
        let down = n as usize - live.len();
        if r < 0.0004 && down < ((n - 1) / 2) as usize {
            // Crash the leader half the time: that is where bugs hide.
            let leader = live.iter().copied().find(|&id| {
                self.nodes[(id - 1) as usize]
                    .raw
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader)
            });
            let victim = match leader {
                Some(l) if self.rng.random_bool(0.5) => l,
                _ => live[self.rng.random_range(0..live.len())],
            };
            self.crash(victim);
        } else if r < 0.0024 && down > 0 {
            let dead: Vec<NodeId> = (1..=n).filter(|id| !live.contains(id)).collect();
            let id = dead[self.rng.random_range(0..dead.len())];
            self.event(format!("restart n{id}"));
            self.start(id);
        } else if r < 0.0029 {
            self.partition();
        } else if r < 0.0039 {
            self.event("heal partitions".into());
            self.cut.clear();
        } else if r < 0.0041 {
            self.transfer_leader();
        } else if r < 0.0061 && !live.is_empty() {
            let id = live[self.rng.random_range(0..live.len())];
            self.compact(id);
        } else if r < 0.0071 && !live.is_empty() {
            // A connection that broke while both ends live on: a false
            // report, usually about the leader.
            let at = live[self.rng.random_range(0..live.len())];
            let peer = self.nodes[(at - 1) as usize]
                .raw
                .as_ref()
                .and_then(|r| r.leader())
                .filter(|_| self.rng.random_bool(0.7))
                .unwrap_or_else(|| self.rng.random_range(1..=n));
            if peer != at {
                self.event(format!("n{at} loses its connection to n{peer}"));
                self.report_peer_down(at, peer);
            }
        }
    }

    /// Node `id` snapshots its state machine and compacts its log up to it.
    fn compact(&mut self, id: NodeId) {
        let node = &mut self.nodes[(id - 1) as usize];
        let raw = node.raw.as_mut().expect("live");
        let index = node.state.applied();
        if index <= raw.log().offset() || raw.compact(index).is_err() {
            return;
        }
        let term = raw
            .log()
            .term(index)
            .expect("the compaction point's term is kept");
        node.disk.purge(index).expect("compaction point is stored");
        node.snapshot = Some(Snapshot {
            index,
            term,
            state: node.state.clone(),
        });
        self.stats.compactions += 1;
        self.event(format!("n{id} snapshots at {index} and compacts its log"));
    }

    fn partition(&mut self) {
        let n = self.opts.nodes;
        self.stats.partitions += 1;
        self.cut.clear();
        let kind = self.rng.random_range(0..3);
        let mut side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
        match kind {
            0 | 1 => {
                if kind == 1 {
                    // Isolate exactly one node, often the leader.
                    let lone = self.rng.random_range(0..n as usize);
                    side = (0..n as usize).map(|i| i == lone).collect();
                }
                for a in 1..=n {
                    for b in 1..=n {
                        if side[(a - 1) as usize] != side[(b - 1) as usize] {
                            self.cut.insert((a, b));
                        }
                    }
                }
                self.event(format!("partition {:?}", side));
            }
            _ => {
                // One-way loss on a few random links.
                for _ in 0..n {
                    let a = self.rng.random_range(1..=n);
                    let b = self.rng.random_range(1..=n);
                    if a != b {
                        self.cut.insert((a, b));
                    }
                }
                self.event(format!("one-way cuts {:?}", self.cut));
            }
        }
    }

    fn transfer_leader(&mut self) {
        let n = self.opts.nodes;
        let to = self.rng.random_range(1..=n);
        for id in self.live() {
            let raw = self.nodes[(id - 1) as usize].raw.as_mut().expect("live");
            if raw.role() == Role::Leader && raw.transfer_leader(to).is_ok() {
                self.stats.transfers += 1;
                self.event(format!("transfer leadership n{id} -> n{to}"));
            }
        }
    }

    fn client_requests(&mut self) {
        if self.rng.random_bool(0.3) {
            let live = self.live();
            if live.is_empty() {
                return;
            }
            let id = live[self.rng.random_range(0..live.len())];
            let value = self.fresh_command(id);
            let raw = self.nodes[(id - 1) as usize].raw.as_mut().expect("live");
            if raw.propose(value).is_ok() {
                self.stats.proposals_accepted += 1;
            }
        }
        if self.rng.random_bool(0.05) {
            let live = self.live();
            if live.is_empty() {
                return;
            }
            let id = live[self.rng.random_range(0..live.len())];
            self.next_ctx += 1;
            let ctx = self.next_ctx;
            let must_see = self.checker.max_commit_known();
            let raw = self.nodes[(id - 1) as usize].raw.as_mut().expect("live");
            if raw.read_index(ctx).is_ok() {
                self.checker.read_started(id, ctx, must_see);
            }
        }
    }

    fn send(&mut self, msg: Message) {
        let snapshot = match &msg.body {
            MessageBody::InstallSnapshot { meta } => {
                let snap = self.nodes[(msg.from - 1) as usize].snapshot.clone();
                assert!(
                    snap.as_ref()
                        .is_some_and(|s| s.index == meta.index && s.term == meta.term),
                    "sim: n{} asked to send snapshot {meta:?} but holds {snap:?}",
                    msg.from
                );
                snap
            }
            _ => None,
        };
        if self.cut.contains(&(msg.from, msg.to)) || self.rng.random_bool(self.loss) {
            if snapshot.is_some() {
                self.snapshot_lost(msg.from, msg.to);
            }
            return;
        }
        let copies = if self.rng.random_bool(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = if self.rng.random_bool(0.05) {
                self.rng.random_range(1..=4 * STEPS_PER_TICK)
            } else {
                self.rng.random_range(1..=6)
            };
            self.send_seq += 1;
            self.net.push(Reverse(InFlight {
                at: self.step_no + delay,
                seq: self.send_seq,
                msg: WireMsg(msg.clone(), snapshot.clone()),
            }));
        }
    }

    fn deliver(&mut self) -> Result<(), Violation> {
        while self
            .net
            .peek()
            .is_some_and(|Reverse(m)| m.at <= self.step_no)
        {
            let Reverse(InFlight {
                msg: WireMsg(msg, snapshot),
                ..
            }) = self.net.pop().expect("peeked");
            let target = &mut self.nodes[(msg.to - 1) as usize];
            if self.cut.contains(&(msg.from, msg.to)) || target.raw.is_none() {
                if snapshot.is_some() {
                    self.snapshot_lost(msg.from, msg.to);
                }
                continue;
            }
            let delivered_snapshot = snapshot.is_some();
            if delivered_snapshot {
                target.staged = snapshot;
            }
            let (from, to) = (msg.from, msg.to);
            let raw = target.raw.as_mut().expect("live");
            if let Err(e) = raw.step(msg) {
                return Err(self.violation(format!("a correct peer's message was refused: {e}")));
            }
            if delivered_snapshot {
                // Like the server, settle a received snapshot before anything
                // else reaches the node: install it if the core took it,
                // drop it if not (a stale leader's, or one the log covers).
                // The server has one receiving slot; a second snapshot
                // cannot be staged over a first.
                self.process_ready(to)?;
                self.nodes[(to - 1) as usize].staged = None;
                if let Some(sender) = self.nodes[(from - 1) as usize].raw.as_mut() {
                    sender.report_snapshot(to, true);
                }
            }
        }
        Ok(())
    }

    /// The transport tells the sender that a snapshot did not arrive.
    fn snapshot_lost(&mut self, from: NodeId, to: NodeId) {
        if let Some(raw) = self.nodes[(from - 1) as usize].raw.as_mut() {
            raw.report_snapshot(to, false);
        }
    }

    /// Handles every `Ready` of node `id` the way a driver must.
    fn process_ready(&mut self, id: NodeId) -> Result<(), Violation> {
        for _ in 0..16 {
            let idx = (id - 1) as usize;
            let raw = self.nodes[idx].raw.as_mut().expect("live");
            if !raw.has_ready() {
                return Ok(());
            }
            let ready = raw.ready();
            if let Some(soft) = ready.soft_state {
                self.event(format!(
                    "n{id} {:?} term {} leader {:?}",
                    soft.role, soft.term, soft.leader
                ));
                if soft.role == Role::Leader {
                    let raw = self.nodes[idx].raw.as_ref().expect("live");
                    self.checker
                        .became_leader(raw)
                        .map_err(|e| self.violation(e))?;
                }
            }
            if let Some(meta) = &ready.snapshot {
                let node = &mut self.nodes[idx];
                let snap = node
                    .staged
                    .take()
                    .expect("a snapshot was staged before the core accepted it");
                assert_eq!(
                    (snap.index, snap.term),
                    (meta.index, meta.term),
                    "sim: staged snapshot mismatch"
                );
                node.disk.install_snapshot(meta.index, meta.term);
                assert_eq!(
                    snap.state.applied(),
                    snap.index,
                    "sim: a snapshot's state is at its index"
                );
                let (index, digest) = (snap.index, snap.state.digest());
                node.state = snap.state.clone();
                node.snapshot = Some(snap);
                self.stats.snapshots_installed += 1;
                self.checker
                    .snapshot_installed(id, index, digest)
                    .map_err(|e| self.violation(e))?;
                self.event(format!("n{id} installs snapshot at {}", meta.index));
            }
            // Thesis 10.2.1: the leader's appends may leave before its disk
            // write. Sometimes crash in between.
            let (early, late): (Vec<Message>, Vec<Message>) = ready
                .messages
                .into_iter()
                .partition(|m| m.may_send_before_persist());
            for m in early {
                self.send(m);
            }
            if self.faults_on && !ready.entries.is_empty() && self.rng.random_bool(0.001) {
                self.event(format!(
                    "n{id} crashes before persisting {} entries",
                    ready.entries.len()
                ));
                self.crash(id);
                return Ok(());
            }
            let node = &mut self.nodes[idx];
            let raw = node.raw.as_ref().expect("live");
            let checked = self.checker.persisting(raw, &node.disk, &ready.entries);
            let stored = match ready.hard_state {
                hs if ready.must_sync => node.disk.append(hs, &ready.entries),
                hs if !ready.entries.is_empty() => {
                    self.stats.unsynced_appends += 1;
                    node.disk.append_unsynced(hs, &ready.entries)
                }
                Some(hs) => node.disk.store_commit(hs),
                None => Ok(()),
            };
            checked.map_err(|e| self.violation(e))?;
            stored.map_err(|e| self.violation(format!("storage refused a Ready: {e}")))?;
            for m in late {
                self.send(m);
            }
            let term = self.nodes[idx].raw.as_ref().expect("live").term();
            let cas_bug = self.opts.cas_bug && id == 1;
            for e in &ready.committed_entries {
                let node = &mut self.nodes[idx];
                let outcome = node.state.apply(e, cas_bug);
                let first = self
                    .checker
                    .applied_entry(id, term, e, node.state.digest())
                    .map_err(|e| self.violation(e))?;
                if first {
                    match outcome {
                        Outcome::CasWritten => self.stats.cas_written += 1,
                        Outcome::CasFailed => self.stats.cas_failed += 1,
                        Outcome::Nothing | Outcome::Written => {}
                    }
                }
                self.stats.entries_committed += 1;
            }
            for rs in &ready.read_states {
                self.checker
                    .read_released(id, *rs)
                    .map_err(|e| self.violation(e))?;
                self.stats.reads_served += 1;
            }
            for rf in &ready.read_failures {
                self.checker.read_failed(id, rf.ctx);
            }
            self.nodes[idx].raw.as_mut().expect("live").advance();
        }
        Ok(())
    }

    fn check_all(&mut self) -> Result<(), Violation> {
        let nodes: Vec<&RawNode> = self.nodes.iter().filter_map(|n| n.raw.as_ref()).collect();
        let res = self.checker.check_step(&nodes);
        res.map_err(|e| self.violation(e))
    }
}

/// Runs one seed; returns the stats or the violation.
pub fn run_seed(opts: SimOptions) -> Result<Stats, Violation> {
    let mut sim = Sim::new(opts);
    sim.run()?;
    Ok(sim.stats.clone())
}

/// Seeds to run by default per cluster size, or `KONSEN_SIM_SEEDS`.
pub fn seed_count(default: u64) -> u64 {
    std::env::var("KONSEN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
