//! The gRPC services a node serves on its one endpoint: etcd's KV, Cluster
//! and Maintenance for clients, and konsen's RaftPeer for the other nodes.
//!
//! * `kv.rs`, `cluster.rs`, `maintenance.rs`: the etcd API.
//! * `watch.rs`: etcd's Watch streams, fed by the node's change feed.
//! * `peer.rs`: Raft message streams and forwarded writes.
//! * this file: what they share: admission (`limits.concurrent_requests_max`),
//!   writes with forwarding to the leader, response headers, and how node
//!   and request errors become gRPC statuses with etcd's wording.

mod cluster;
mod kv;
mod lease;
mod maintenance;
mod peer;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use konsen_core::{NodeId, Term};
use konsen_rpc::convert::{WriteOutcome, write_outcome_from_wire};
use konsen_rpc::etcd::etcdserverpb::ResponseHeader;
use konsen_rpc::peer::{ForwardRequest, raft_peer_client::RaftPeerClient};
use konsen_storage::{
    Command, KvReader, RangeRequest, RangeResponse, RequestError, Snapshots, StorageOptions, Txn,
    TxnResult,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

pub use cluster::ClusterService;
pub use kv::KvService;
pub(crate) use kv::put_response;
pub use lease::LeaseService;
pub use maintenance::MaintenanceService;
pub use peer::PeerService;
pub use watch::WatchService;

use crate::feed::WatchHub;
use crate::lessor::Lessor;
use crate::node::{NodeError, NodeHandle};
use crate::settings::Settings;

/// A read and the Raft term it was served in.
#[derive(Clone, Debug)]
pub struct ReadOutcome {
    pub response: RangeResponse,
    pub term: Term,
}

/// Runs `work` (disk work that may take long: `what`) on the blocking pool,
/// off the runtime's one thread, which also carries the node's heartbeats.
async fn blocking<R: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("{what} task failed: {e}")))
}

/// What every service needs.
#[derive(Clone, Debug)]
pub struct Shared {
    pub settings: Arc<Settings>,
    pub node: NodeHandle,
    /// Clients of the other nodes' RaftPeer service, for forwarding.
    pub peers: Arc<HashMap<NodeId, RaftPeerClient<Channel>>>,
    /// One permit per client request being served.
    pub permits: Arc<Semaphore>,
    pub storage_options: StorageOptions,
    /// Snapshots of this node's store: received by the peer service,
    /// hashed for `HashKV`.
    pub snapshots: Snapshots,
    /// Serializable reads, served without the node loop.
    pub reader: KvReader,
    /// The applied changes, for watch streams.
    pub hub: WatchHub,
    /// One permit per watch stream being served
    /// (`limits.watch_streams_max`).
    pub watch_streams: Arc<Semaphore>,
    /// The leases' clocks (kept while this node leads).
    pub lessor: Lessor,
}

impl Shared {
    /// A permit to serve one client request, or RESOURCE_EXHAUSTED.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "etcdserver: too many requests (limits.concurrent_requests_max reached)",
            )
        })
    }

    /// The header every response carries.
    pub fn header(&self, revision: i64, raft_term: u64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.settings.cluster_id,
            member_id: self.settings.node_id,
            revision,
            raft_term,
        }
    }

    /// Validates `command`, proposes it here or forwards it to the leader,
    /// and waits for it to apply, within `limits.request_timeout_ms`.
    ///
    /// While no leader is known, or the node it was forwarded to turned
    /// out not to lead, the write was certainly not proposed, so it is
    /// tried again (elections take a second or two). Once proposed it is
    /// never retried here: a write whose leader changed may or may not
    /// have been applied, and only the client can decide what to do.
    pub async fn write(&self, command: Command) -> Result<WriteOutcome, Status> {
        command
            .validate(&self.storage_options)
            .map_err(|e| request_status(&e))?;
        let encoded = command.encode();
        let deadline = Instant::now() + self.settings.request_timeout();
        // On the leader, the common case: the node loop answers by the
        // deadline, so this path arms no timer of its own.
        match self.node.write(encoded.clone(), deadline).await {
            // Boxed: the retries' timers and forwarding calls would
            // otherwise enlarge every write's future, which is moved
            // whole (docs/performance.md, item 19).
            Err(NodeError::NotLeader { leader }) => {
                Box::pin(self.write_elsewhere(leader, encoded, deadline)).await
            }
            other => other.map_err(|e| node_status(&e)),
        }
    }

    /// The rest of [`Shared::write`] once this node turned out not to
    /// lead: forwards to `leader`, or waits a tick for one and tries again.
    pub(crate) async fn write_elsewhere(
        &self,
        mut leader: Option<NodeId>,
        encoded: bytes::Bytes,
        deadline: Instant,
    ) -> Result<WriteOutcome, Status> {
        let attempts = async {
            loop {
                if let Some(leader) = leader {
                    // Boxed: the forwarding call's future is large.
                    match Box::pin(self.forward(leader, encoded.clone())).await {
                        Err(s) if s.message() == NOT_LEADER_MESSAGE => {}
                        other => return other,
                    }
                }
                tokio::time::sleep(self.settings.tick).await;
                leader = match self.node.write(encoded.clone(), deadline).await {
                    Err(NodeError::NotLeader { leader }) => leader,
                    other => return other.map_err(|e| node_status(&e)),
                };
            }
        };
        tokio::time::timeout_at(deadline, attempts)
            .await
            .map_err(|_| timed_out())?
    }

    /// Reads this node's applied state (serializable), with no hop through
    /// the node loop.
    pub async fn read_local(&self, request: RangeRequest) -> Result<ReadOutcome, Status> {
        self.read_applied(request, self.node.status().term).await
    }

    /// Reads linearizably: waits, within `limits.request_timeout_ms`, until
    /// the node loop confirms that this node's applied state covers every
    /// write committed before now (ReadIndex), trying again while no leader
    /// is known or leadership moves (a read changes nothing, so trying again
    /// is always safe); then reads that state.
    pub async fn read_linearizable(&self, request: RangeRequest) -> Result<ReadOutcome, Status> {
        let term = self.confirm_read().await?;
        self.read_applied(request, term).await
    }

    /// Waits, within `limits.request_timeout_ms`, until this node's applied
    /// state covers every write committed before now (ReadIndex); returns
    /// the term it was confirmed in.
    pub async fn confirm_read(&self) -> Result<Term, Status> {
        let attempts = async {
            loop {
                match self.node.read_index().await {
                    Err(NodeError::NoLeader | NodeError::ReadFailed) => {}
                    other => return other.map_err(|e| node_status(&e)),
                }
                tokio::time::sleep(self.settings.tick).await;
            }
        };
        tokio::time::timeout(self.settings.request_timeout(), attempts)
            .await
            .map_err(|_| timed_out())?
    }

    /// Serves a read-only txn: after ReadIndex if `linearizable`, then on
    /// the blocking pool against one view of the applied state.
    pub async fn read_txn(
        &self,
        txn: Txn,
        linearizable: bool,
    ) -> Result<(TxnResult, Term), Status> {
        let term = if linearizable {
            self.confirm_read().await?
        } else {
            self.node.status().term
        };
        let reader = self.reader.clone();
        let result = blocking("txn read", move || reader.txn(&txn)).await?;
        result
            .map(|t| (t, term))
            .map_err(|e| node_status(&e.into()))
    }

    /// Reads the latest applied state: a single key right here, a range on
    /// the blocking pool (a long one must not hold up the runtime's thread,
    /// which also carries the node's heartbeats).
    async fn read_applied(&self, request: RangeRequest, term: Term) -> Result<ReadOutcome, Status> {
        let read = if request.range_end.is_empty() {
            self.reader.range(&request)
        } else {
            let reader = self.reader.clone();
            blocking("range read", move || reader.range(&request)).await?
        };
        read.map(|response| ReadOutcome { response, term })
            .map_err(|e| node_status(&e.into()))
    }

    async fn forward(&self, leader: NodeId, command: bytes::Bytes) -> Result<WriteOutcome, Status> {
        let Some(client) = self.peers.get(&leader) else {
            return Err(Status::internal(format!(
                "leader {leader} is not a known peer"
            )));
        };
        let request = ForwardRequest {
            cluster_id: self.settings.cluster_id,
            from: self.settings.node_id,
            command,
        };
        let response = client.clone().forward(request).await.map_err(|s| {
            if s.code() == tonic::Code::Unavailable && !s.message().starts_with("etcdserver:") {
                Status::unavailable(format!(
                    "etcdserver: leader {leader} unreachable: {}",
                    s.message()
                ))
            } else {
                s
            }
        })?;
        write_outcome_from_wire(response.into_inner())
            .map_err(|e| Status::internal(format!("bad answer from leader {leader}: {e}")))
    }
}

/// What a node answers a forwarded write when it is not the leader: the
/// write was not proposed, and the forwarder may try again.
pub const NOT_LEADER_MESSAGE: &str = "etcdserver: not leader (forwarded write not proposed)";

/// The status for a request the cluster did not complete in time.
pub fn timed_out() -> Status {
    Status::deadline_exceeded("etcdserver: request timed out")
}

/// A node error as a gRPC status, worded like etcd where etcd has words
/// (clients such as etcdctl match on them).
pub fn node_status(e: &NodeError) -> Status {
    match e {
        NodeError::NotLeader { .. } | NodeError::NoLeader => {
            Status::unavailable("etcdserver: no leader")
        }
        NodeError::Busy(why) => {
            Status::resource_exhausted(format!("etcdserver: too many requests: {why}"))
        }
        NodeError::LeaderChanged => Status::unavailable("etcdserver: leader changed"),
        NodeError::ReadFailed => {
            Status::unavailable("etcdserver: leader changed (read not confirmed)")
        }
        NodeError::Storage(why) => Status::internal(format!("etcdserver: storage failure: {why}")),
        NodeError::Request(e) => request_status(e),
        NodeError::Stopped => Status::unavailable("etcdserver: server stopped"),
        NodeError::TimedOut => timed_out(),
        NodeError::SnapshotRefused(why) => Status::failed_precondition(why.clone()),
    }
}

/// A command the state machine refused (`WriteResult::Rejected`), as the
/// status etcd gives for the same words.
pub fn rejected_status(why: &str) -> Status {
    let message = format!("etcdserver: {why}");
    if why.starts_with("mvcc: required revision") || why == "too large lease TTL" {
        Status::out_of_range(message)
    } else if why == "requested lease not found" {
        Status::not_found(message)
    } else if why == "lease already exists" {
        Status::failed_precondition(message)
    } else {
        Status::invalid_argument(message)
    }
}

/// A refused request as a gRPC status, with etcd's messages.
pub fn request_status(e: &RequestError) -> Status {
    match e {
        RequestError::EmptyKey => Status::invalid_argument("etcdserver: key is not provided"),
        RequestError::TooLarge { .. } => {
            Status::invalid_argument("etcdserver: request is too large")
        }
        RequestError::ValueProvided => Status::invalid_argument("etcdserver: value is provided"),
        RequestError::LeaseProvided => Status::invalid_argument("etcdserver: lease is provided"),
        RequestError::KeyNotFound => Status::invalid_argument("etcdserver: key not found"),
        RequestError::FutureRevision { .. } | RequestError::Compacted { .. } => {
            Status::out_of_range(format!("etcdserver: {e}"))
        }
        RequestError::NegativeRevision(_)
        | RequestError::TooManyOps { .. }
        | RequestError::DuplicateKey
        | RequestError::TxnTooDeep { .. } => Status::invalid_argument(format!("etcdserver: {e}")),
        RequestError::Decode(e) => {
            Status::invalid_argument(format!("etcdserver: malformed request: {e}"))
        }
        RequestError::LeaseNotFound => Status::not_found(format!("etcdserver: {e}")),
        RequestError::LeaseExists => Status::failed_precondition(format!("etcdserver: {e}")),
        RequestError::LeaseTtlTooLarge { .. } => Status::out_of_range(format!("etcdserver: {e}")),
        RequestError::LeaseTtlNotPositive(_) | RequestError::LeaseIdNotPositive(_) => {
            Status::invalid_argument(format!("etcdserver: {e}"))
        }
    }
}
