//! The node loop: the one task that owns the Raft core and the storage.
//!
//! Each turn it waits for a tick, a peer message or a client request,
//! then drains whatever else is already queued (up to `DRAIN_MAX` of each),
//! so that one `Ready`, and so one fsync, covers all of it: group commit
//! falls out of the draining. It then handles `Ready`s in the order the core
//! demands (persist, send, apply, release reads, advance) until none is left.
//!
//! The server runs everything on one runtime thread (`main.rs`), and the
//! loop does its disk work right there: the fsync of a `Ready`'s log
//! append and applying small batches. Handing that work to another thread
//! and back costs two thread wake-ups per `Ready`, which on a few shared
//! cores cost more than the work (docs/performance.md, item 2 and what
//! was not kept). A leader first yields once, so that the appends it
//! queued for its followers are on the wire while its own fsync runs;
//! while its followers keep up it writes its entries without one
//! (`Ready::must_sync`), and syncs them if commits stall
//! (`LAZY_SYNC_STALL_MAX`).
//! Long work (a large apply, installing a snapshot, purging the log) goes
//! to the blocking pool instead ([`Driver::on_disk`]), so that heartbeats
//! and clients are not held up; the loop owns the stores, and a trip takes
//! them along and brings them back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use konsen_core::{
    Config, Entry, HardState, Membership, Message, MessageBody, NodeId, ProposeError, RawNode,
    ReadError, Ready, RestoredState, Role, SoftState, Term, storage::Storage,
};
use konsen_rpc::convert::{WriteOutcome, WriteResult};
use konsen_rpc::peer::raft_peer_client::RaftPeerClient;
use konsen_storage::{
    ApplyOutcome, ApplyResult, KvStore, LogStore, RocksStore, Snapshots, StagedSnapshot,
    install_snapshot,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::snapshot::{self, SNAPSHOT_SENDS_MAX};
use super::waiters::{PendingWrite, Waiters};
use super::{NodeError, NodeHandle, NodeStatus, PeerEvent, Request};
use crate::feed::{FeedBatch, WatchHub};
use crate::lessor::Lessor;
use crate::settings::Settings;
use crate::transport::Transport;

/// Peer messages and client requests taken per turn, each, before a
/// `Ready` is built: bounds the latency one turn adds.
const DRAIN_MAX: usize = 1024;
/// Peer messages waiting for the node loop; a full queue slows the peers'
/// streams down.
const PEER_INBOUND_MAX: usize = 4096;
/// Committed entries applied on the runtime's thread, in bytes; more go to
/// the blocking pool with the rest of the `Ready`'s disk work, so that a
/// large apply does not hold up the network (and the node's heartbeats).
const INLINE_APPLY_BYTES_MAX: usize = 256 * 1024;
/// Ticks between refreshes of the data size and pruning of abandoned
/// waiters.
const HOUSEKEEPING_TICKS: u64 = 10;
/// How long a leader's entries written without a sync may wait with the
/// commit index standing still before the leader syncs them and commits
/// with the followers that answer (a follower paused or cut off). A
/// follower round takes 1-3 ms under load here; the core's own check
/// comes only at the next tick (ARCHITECTURE.md, "Decisions").
const LAZY_SYNC_STALL_MAX: Duration = Duration::from_millis(10);

/// A started node: the handle for the services, and the loop's task,
/// which ends on shutdown (`Ok`) or on a storage failure (`Err`).
#[derive(Debug)]
pub struct NodeParts {
    pub handle: NodeHandle,
    pub task: JoinHandle<Result<()>>,
}

/// Clients of the other nodes' peer service, without a per-call timeout
/// (a snapshot transfer takes as long as it takes).
pub type SnapshotClients = Arc<HashMap<NodeId, RaftPeerClient<Channel>>>;

/// Restores the core from `store` and starts the node loop.
pub fn spawn(
    settings: Arc<Settings>,
    store: RocksStore,
    transport: Transport,
    snapshot_clients: SnapshotClients,
    hub: WatchHub,
    lessor: Lessor,
    shutdown: watch::Receiver<bool>,
) -> Result<NodeParts> {
    let RocksStore { log, kv } = store;
    let stored = log.load().context("loading the raft log")?;
    let restored = RestoredState {
        hard_state: stored.hard_state,
        membership: Membership::with_voters(settings.endpoints.iter().map(|(id, _)| *id)),
        snapshot_index: stored.purged_index,
        snapshot_term: stored.purged_term,
        entries: stored.entries,
        applied: kv.applied_index(),
    };
    let mut config = Config::new(settings.node_id);
    config.heartbeat_ticks = settings.heartbeat_ticks;
    config.election_ticks = settings.election_ticks;
    // An early campaign must come before the normal one.
    config.leader_down_ticks_max = config
        .leader_down_ticks_max
        .min(settings.election_ticks.saturating_sub(1));
    // Nodes restarted together must not draw the same election timeouts.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    config.seed = settings.node_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(nanos);
    let raw =
        RawNode::new(config, restored).context("restoring the raft node from its data dir")?;
    info!(
        term = raw.term(),
        last_index = raw.status().last_index,
        applied = kv.applied_index(),
        "restored raft state"
    );

    let (request_tx, request_rx) = mpsc::channel(settings.limits.pending_proposals_max);
    let (peer_tx, peer_rx) = mpsc::channel(PEER_INBOUND_MAX);
    let data_size_bytes = kv.data_size_bytes().unwrap_or(0);
    let (status_tx, status_rx) = watch::channel(node_status(&raw, &log, &kv, data_size_bytes));
    let (snapshot_done_tx, snapshot_done_rx) = mpsc::channel(SNAPSHOT_SENDS_MAX);
    let driver = Driver {
        waiters: Waiters::new(settings.limits.pending_proposals_max),
        last_leader: (raw.term(), raw.leader()),
        data_size_bytes,
        raw,
        snapshots: kv.snapshots(),
        disk: Some(Disk { log, kv }),
        transport,
        snapshot_clients,
        snapshots_sending: HashSet::new(),
        snapshot_done: snapshot_done_tx,
        staged: None,
        status_tx,
        settings,
        ticks: 0,
        lazy_watch: None,
        hub,
        lessor,
    };
    let task = tokio::spawn(driver.run(request_rx, peer_rx, snapshot_done_rx, shutdown));
    Ok(NodeParts {
        handle: NodeHandle {
            requests: request_tx,
            peer_events: peer_tx,
            status: status_rx,
        },
        task,
    })
}

/// The stores, owned by the loop and lent to the blocking pool for a trip.
struct Disk {
    log: LogStore,
    kv: KvStore,
}

impl Disk {
    /// Steps 1 to 3 of a `Ready` (persist, send what waited for it, apply);
    /// hands back the committed entries with their apply results.
    fn persist_and_apply(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
        must_sync: bool,
        late: Vec<Message>,
        transport: &Transport,
        committed: Vec<Entry>,
    ) -> Result<(Vec<Entry>, Vec<ApplyResult>)> {
        match hard_state {
            hard_state if must_sync => self
                .log
                .append(hard_state, entries)
                .context("persisting the raft log")?,
            // A leader whose followers keep up: its entries commit on their
            // disks, and a later synced write covers its own copy.
            hard_state if !entries.is_empty() => self
                .log
                .append_unsynced(hard_state, entries)
                .context("writing the raft log")?,
            // Only the commit index moved: no fsync for that.
            Some(hard_state) => self
                .log
                .store_commit(hard_state)
                .context("storing the commit index")?,
            None => {}
        }
        for message in late {
            transport.send(message);
        }
        let results = if committed.is_empty() {
            Vec::new()
        } else {
            self.kv
                .apply(&committed)
                .context("applying committed entries")?
        };
        Ok((committed, results))
    }
}

struct Driver {
    raw: RawNode,
    /// `None` only while a trip to the disk is under way.
    disk: Option<Disk>,
    snapshots: Snapshots,
    transport: Transport,
    snapshot_clients: SnapshotClients,
    /// Followers a snapshot is being sent to.
    snapshots_sending: HashSet<NodeId>,
    /// Where snapshot sends report their outcome.
    snapshot_done: mpsc::Sender<(NodeId, bool)>,
    /// A received snapshot, while the core decides whether to install it.
    staged: Option<(StagedSnapshot, oneshot::Sender<Result<bool, NodeError>>)>,
    waiters: Waiters,
    status_tx: watch::Sender<NodeStatus>,
    settings: Arc<Settings>,
    /// The last (term, leader) announced in the log.
    last_leader: (Term, Option<NodeId>),
    data_size_bytes: u64,
    ticks: u64,
    /// While the leader holds unsynced, uncommitted entries: the commit
    /// index and when it was last seen to move.
    lazy_watch: Option<(konsen_core::Index, tokio::time::Instant)>,
    /// Where applied changes go to the watch streams.
    hub: WatchHub,
    /// The leases' clocks, kept while this node leads.
    lessor: Lessor,
}

impl Driver {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut peer_events: mpsc::Receiver<PeerEvent>,
        mut snapshot_done: mpsc::Receiver<(NodeId, bool)>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut ticker = tokio::time::interval(self.settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Armed while `lazy_watch` is set; re-armed only when it fires.
        let stall = tokio::time::sleep(LAZY_SYNC_STALL_MAX);
        tokio::pin!(stall);
        let mut stall_armed = false;
        loop {
            tokio::select! {
                () = &mut stall, if stall_armed => {
                    stall_armed = false;
                    self.on_stall_check();
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = ticker.tick() => self.on_tick(),
                Some(event) = peer_events.recv() => self.on_peer_event(event),
                Some(request) = requests.recv() => self.on_request(request),
                Some((to, delivered)) = snapshot_done.recv() => {
                    self.snapshots_sending.remove(&to);
                    self.raw.report_snapshot(to, delivered);
                }
            }
            for _ in 0..DRAIN_MAX {
                match peer_events.try_recv() {
                    Ok(event) => self.on_peer_event(event),
                    Err(_) => break,
                }
            }
            for _ in 0..DRAIN_MAX {
                match requests.try_recv() {
                    Ok(request) => self.on_request(request),
                    Err(_) => break,
                }
            }
            while self.raw.has_ready() {
                let ready = self.raw.ready();
                self.handle_ready(ready).await?;
            }
            if self.watch_lazy_commit()
                && !stall_armed
                && let Some((_, since)) = self.lazy_watch
            {
                stall.as_mut().reset(since + LAZY_SYNC_STALL_MAX);
                stall_armed = true;
            }
            if let Some((staged, reply)) = self.staged.take() {
                // The core did not need it: its log already covers it.
                debug!(
                    index = staged.header().index,
                    "received snapshot not needed"
                );
                let _ = reply.send(Ok(false));
            }
        }
        self.waiters.fail_all(NodeError::Stopped);
        info!("node loop stopped");
        Ok(())
    }

    /// Keeps `lazy_watch` current; returns whether it is set.
    fn watch_lazy_commit(&mut self) -> bool {
        if !self.raw.has_unsynced_uncommitted() {
            self.lazy_watch = None;
            return false;
        }
        let commit = self.raw.log().committed();
        if self.lazy_watch.is_none_or(|(seen, _)| seen != commit) {
            self.lazy_watch = Some((commit, tokio::time::Instant::now()));
        }
        true
    }

    /// The stall timer fired: if the commit index has not moved for
    /// `LAZY_SYNC_STALL_MAX` with unsynced entries waiting, sync them.
    fn on_stall_check(&mut self) {
        if self.watch_lazy_commit()
            && let Some((_, since)) = self.lazy_watch
            && since.elapsed() >= LAZY_SYNC_STALL_MAX
        {
            debug!("commits stalled with unsynced entries; syncing them");
            self.raw.sync_own_entries();
        }
    }

    fn on_tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        self.waiters.expire_writes(tokio::time::Instant::now());
        if self.ticks.is_multiple_of(HOUSEKEEPING_TICKS) {
            self.waiters.prune_abandoned();
            match self.kv().data_size_bytes() {
                Ok(size) => self.data_size_bytes = size,
                Err(e) => warn!("cannot read the data size: {e}"),
            }
            self.publish_status();
        }
    }

    fn on_peer_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Message(message) => {
                let (from, kind) = (message.from, message.body.name());
                if let Err(e) = self.raw.step(message) {
                    debug!(from, kind, "dropped peer message: {e}");
                }
            }
            PeerEvent::Down(peer) => {
                if self.raw.leader() == Some(peer) && self.raw.role() == Role::Follower {
                    info!(peer, "the stream from the leader broke; campaigning early");
                }
                self.raw.report_peer_down(peer);
            }
            PeerEvent::Snapshot {
                message,
                staged,
                reply,
            } => {
                // A staged snapshot holds the store's only receiving slot,
                // and the loop settles it before its next turn.
                debug_assert!(self.staged.is_none(), "one staged snapshot at a time");
                self.staged = Some((staged, reply));
                if let Err(e) = self.raw.step(message)
                    && let Some((_, reply)) = self.staged.take()
                {
                    let _ = reply.send(Err(NodeError::SnapshotRefused(e.to_string())));
                }
            }
        }
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Write {
                command,
                deadline,
                reply,
            } => self.propose(command, deadline, reply),
            Request::ReadIndex { reply } => {
                if self.waiters.reads_full() {
                    let _ = reply.send(Err(NodeError::Busy(
                        "too many reads waiting (limits.pending_proposals_max)".into(),
                    )));
                    return;
                }
                let ctx = self.waiters.add_read(reply);
                if let Err(e) = self.raw.read_index(ctx) {
                    let error = match e {
                        ReadError::NoLeader => NodeError::NoLeader,
                        ReadError::Backpressure { .. } => NodeError::Busy(e.to_string()),
                    };
                    self.waiters.fail_read(ctx, error);
                }
            }
        }
    }

    fn propose(
        &mut self,
        command: Bytes,
        deadline: tokio::time::Instant,
        reply: super::waiters::WriteReply,
    ) {
        if self.waiters.writes_full() {
            reply.send(Err(NodeError::Busy(
                "too many writes waiting (limits.pending_proposals_max)".into(),
            )));
            return;
        }
        match self.raw.propose(command) {
            Ok(index) => self.waiters.add_write(
                index,
                PendingWrite {
                    term: self.raw.term(),
                    deadline,
                    reply,
                },
            ),
            Err(ProposeError::NotLeader { leader }) => {
                reply.send(Err(NodeError::NotLeader { leader }));
            }
            Err(ProposeError::Transferring { .. }) => {
                reply.send(Err(NodeError::LeaderChanged));
            }
            Err(e @ ProposeError::Backpressure { .. }) => {
                reply.send(Err(NodeError::Busy(e.to_string())));
            }
        }
    }

    /// The stores, between trips to the disk.
    fn disk(&self) -> &Disk {
        self.disk
            .as_ref()
            .expect("driver invariant: the stores are home between disk trips")
    }

    fn disk_mut(&mut self) -> &mut Disk {
        self.disk
            .as_mut()
            .expect("driver invariant: the stores are home between disk trips")
    }

    fn kv(&self) -> &KvStore {
        &self.disk().kv
    }

    /// Runs `work` on the stores in the blocking pool and waits for it.
    /// The loop is the only user of the stores and waits here, so nothing
    /// else needs them meanwhile.
    async fn on_disk<R: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Disk) -> R + Send + 'static,
    ) -> R {
        let mut disk = self
            .disk
            .take()
            .expect("driver invariant: one disk trip at a time");
        let (disk, out) = tokio::task::spawn_blocking(move || {
            let out = work(&mut disk);
            (disk, out)
        })
        .await
        .unwrap_or_else(|e| panic!("driver invariant: a disk trip panicked: {e}"));
        self.disk = Some(disk);
        out
    }

    /// Carries out one `Ready`, in the order the core's contract demands.
    async fn handle_ready(&mut self, ready: Ready) -> Result<()> {
        if let Some(soft) = ready.soft_state {
            self.on_soft_state(soft);
        }
        if let Some(meta) = ready.snapshot {
            // Snapshot messages only reach the core with their data staged
            // (the peer service drops them otherwise).
            let (staged, reply) = self.staged.take().unwrap_or_else(|| {
                panic!(
                    "snapshot install invariant: the core accepted snapshot {}@{} that was never \
                     staged",
                    meta.index, meta.term
                )
            });
            let header = staged.header();
            assert_eq!(
                (header.index, header.term),
                (meta.index, meta.term),
                "snapshot install invariant: the staged data is not the snapshot the core accepted"
            );
            let hard_state = ready.hard_state.unwrap_or_else(|| {
                panic!(
                    "snapshot install invariant: installing {} raised no commit index",
                    meta.index
                )
            });
            let stats = staged.stats();
            self.on_disk(move |d| install_snapshot(&mut d.log, &mut d.kv, staged, hard_state))
                .await
                .context("installing a snapshot")?;
            info!(
                index = header.index,
                term = header.term,
                keys = stats.keys,
                bytes = stats.bytes,
                "installed snapshot at index {} ({} keys)",
                header.index,
                stats.keys
            );
            let _ = reply.send(Ok(true));
            // Watchers read what the snapshot brought from the history.
            self.hub.publish(FeedBatch::Gap {
                revision: self.kv().revision(),
            });
        }
        // A leader's appends and heartbeats go out while its own disk
        // write runs (the core allows it); everything else promises what
        // is on disk, so it waits. Snapshots get their own transfer.
        let (early, mut late): (Vec<Message>, Vec<Message>) = ready
            .messages
            .into_iter()
            .partition(Message::may_send_before_persist);
        let sent_early = !early.is_empty();
        self.send(early);
        let snapshots: Vec<Message> = late
            .extract_if(.., |m| {
                matches!(m.body, MessageBody::InstallSnapshot { .. })
            })
            .collect();
        let Ready {
            hard_state,
            entries,
            must_sync,
            committed_entries,
            ..
        } = ready;
        // Persist, send what waited for it (the transport's queues take
        // messages from any thread), apply.
        if must_sync && sent_early {
            // Let the peer streams put the appends on the wire before this
            // thread blocks in the fsync: a yield runs every task that is
            // ready.
            tokio::task::yield_now().await;
        }
        let apply_bytes: usize = committed_entries.iter().map(Entry::size_bytes).sum();
        // A compaction scans the history: never on the runtime's thread.
        let heavy = apply_bytes > INLINE_APPLY_BYTES_MAX
            || committed_entries
                .iter()
                .any(|e| konsen_storage::Command::is_heavy(&e.data));
        // The store keeps its changes only while a watch stream follows.
        let feeding = self.hub.wanted();
        let revision_before = self.kv().revision();
        if feeding {
            self.disk_mut().kv.feed_changes();
        } else {
            self.disk_mut().kv.stop_changes();
        }
        let transport = self.transport.clone();
        let work = move |d: &mut Disk| {
            d.persist_and_apply(
                hard_state,
                &entries,
                must_sync,
                late,
                &transport,
                committed_entries,
            )
        };
        let (committed_entries, results) = if heavy {
            self.on_disk(work).await?
        } else {
            work(self.disk_mut())?
        };
        self.publish_changes(feeding, revision_before);
        for message in snapshots {
            self.start_snapshot(message);
        }
        for result in &results {
            match result.outcome {
                ApplyOutcome::LeaseGrant(g) => self.lessor.granted(g.id, g.ttl),
                ApplyOutcome::LeaseRevoke(r) => self.lessor.revoked(r.id),
                _ => {}
            }
        }
        if let Some(first) = committed_entries.first().map(|e| e.index) {
            for result in results {
                let Some(write) = self.waiters.take_write(result.index) else {
                    continue;
                };
                let term = committed_entries[(result.index - first) as usize].term;
                let answer = if write.term == term {
                    Ok(WriteOutcome {
                        index: result.index,
                        term,
                        result: WriteResult::from_apply(result.outcome),
                    })
                } else {
                    // Another leader's entry took this index.
                    Err(NodeError::LeaderChanged)
                };
                write.reply.send(answer);
            }
        }
        for read in ready.read_states {
            self.waiters.confirm_read(read.ctx, read.index);
        }
        for failure in ready.read_failures {
            self.waiters.fail_read(failure.ctx, NodeError::ReadFailed);
        }
        for read in self.waiters.take_servable_reads(self.kv().applied_index()) {
            let _ = read.send(Ok(self.raw.term()));
        }
        self.raw.advance();
        self.maybe_compact().await?;
        self.publish_status();
        Ok(())
    }

    /// Compacts the log once `snapshot_entries_max` applied entries lie
    /// between the last compaction point and the kept tail. The state
    /// machine on disk is the snapshot: it is written to the same WAL as
    /// the log, before the purge, and the purge is a synced write, so the
    /// state covering the purged entries is durable before they are gone.
    async fn maybe_compact(&mut self) -> Result<()> {
        let (purged, _) = self.disk().log.purged();
        let target = self
            .kv()
            .applied_index()
            .saturating_sub(self.settings.snapshot.tail_entries);
        if target <= purged || target - purged < self.settings.snapshot.entries_max {
            return Ok(());
        }
        if let Err(e) = self.raw.compact(target) {
            debug!("not compacting yet: {e}");
            return Ok(());
        }
        self.on_disk(move |d| d.log.purge(target))
            .await
            .context("purging the raft log")?;
        info!(index = target, "compacted the log up to index {target}");
        Ok(())
    }

    /// Hands `messages` to the transport, except snapshots, which get
    /// their own transfer (`RaftPeer.InstallSnapshot`).
    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                self.start_snapshot(message);
                continue;
            }
            self.transport.send(message);
        }
    }

    /// Starts sending a snapshot to `message.to`, unless one is already on
    /// its way there; the outcome comes back on `snapshot_done`.
    fn start_snapshot(&mut self, message: Message) {
        let to = message.to;
        if self.snapshots_sending.contains(&to) {
            return;
        }
        // A refusal is reported like an outcome, after this Ready.
        let Some(client) = self.snapshot_clients.get(&to).cloned() else {
            warn!(to, "no peer client for a snapshot to node {to}");
            let _ = self.snapshot_done.try_send((to, false));
            return;
        };
        if self.snapshots_sending.len() >= SNAPSHOT_SENDS_MAX {
            let _ = self.snapshot_done.try_send((to, false));
            return;
        }
        self.snapshots_sending.insert(to);
        let snapshots = self.snapshots.clone();
        let done = self.snapshot_done.clone();
        let cluster_id = self.settings.cluster_id;
        let chunk_bytes_max = self.settings.snapshot.chunk_bytes_max;
        tokio::spawn(async move {
            let delivered =
                snapshot::send(client, snapshots, cluster_id, message, chunk_bytes_max).await;
            if !delivered {
                tokio::time::sleep(snapshot::RETRY_AFTER).await;
            }
            // The loop may be gone (shutdown); nothing to report to then.
            let _ = done.send((to, delivered)).await;
        });
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        if soft.role == Role::Leader && !self.lessor.is_primary() {
            // The longest election timeout the core may draw.
            let extend = self.settings.tick * (2 * self.settings.election_ticks);
            self.lessor.promote(self.kv().leases(), extend);
        } else if soft.role != Role::Leader {
            self.lessor.demote();
        }
        if soft.role != Role::Leader {
            // Writes proposed here may still commit under the new leader,
            // or be overwritten: their clients must not wait for either.
            self.waiters.fail_writes(NodeError::LeaderChanged);
        }
        if soft.leader.is_some() && (soft.term, soft.leader) != self.last_leader {
            let leader = soft.leader.unwrap_or_default();
            let endpoint = self.settings.endpoint_of(leader).unwrap_or("unknown");
            info!(term = soft.term, leader, role = ?soft.role, "Term - {}, leader - {:?}", soft.term, endpoint);
            self.last_leader = (soft.term, soft.leader);
        }
    }

    /// Hands what the apply just did to the watch streams: the changes if
    /// the store fed them, else that the revision moved without them.
    fn publish_changes(&mut self, feeding: bool, revision_before: i64) {
        let revision = self.kv().revision();
        let changes = self.disk_mut().kv.take_changes();
        if feeding && !changes.is_empty() {
            self.hub.publish(FeedBatch::Changes { revision, changes });
        } else if revision != revision_before {
            self.hub.publish(FeedBatch::Gap { revision });
        }
    }

    /// Runs after every `Ready`; watchers wake only on a change.
    fn publish_status(&self) {
        let disk = self.disk();
        let status = node_status(&self.raw, &disk.log, &disk.kv, self.data_size_bytes);
        self.status_tx.send_if_modified(|old| {
            let changed = *old != status;
            if changed {
                *old = status;
            }
            changed
        });
    }
}

/// The node as the status page sees it. Reads the core's fields directly
/// rather than `RawNode::status()`, which copies the membership.
fn node_status(raw: &RawNode, log: &LogStore, kv: &KvStore, data_size_bytes: u64) -> NodeStatus {
    NodeStatus {
        id: raw.id(),
        role: raw.role(),
        term: raw.term(),
        leader: raw.leader(),
        last_index: raw.log().last_index(),
        commit: raw.log().committed(),
        applied: kv.applied_index(),
        snapshot_index: log.purged().0,
        revision: kv.revision(),
        data_size_bytes,
    }
}
