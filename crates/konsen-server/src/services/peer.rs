//! konsen's `RaftPeer` service: message streams from the other nodes, and
//! writes they forward to this node as leader.
//!
//! Every batch is checked against this cluster's id and this node's id (a
//! mismatch ends the stream with an error), and a malformed message in it
//! is dropped with a warning (Raft tolerates lost messages), never trusted.
//! Forwarded writes and snapshots are checked against the cluster id too.

use std::time::{Duration, Instant};

use konsen_core::{Message, MessageBody};
use konsen_rpc::convert::{
    SnapshotChunk as IncomingChunk, message_from_wire, snapshot_chunk_from_wire,
    write_outcome_to_wire,
};
use konsen_rpc::peer::{
    ForwardRequest, ForwardResponse, LeaseRequest, LeaseResponse, MessageBatch, SendAck,
    SnapshotAck, SnapshotChunk, raft_peer_server::RaftPeer,
};
use konsen_storage::{Command, StorageError};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

/// How often a long snapshot transfer logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A refused or failed snapshot transfer, as the sender sees it.
fn snapshot_status(e: StorageError) -> Status {
    match e {
        StorageError::SnapshotBusy => Status::aborted(e.to_string()),
        StorageError::BadSnapshot(_) => Status::invalid_argument(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

use super::{NOT_LEADER_MESSAGE, Shared, blocking, node_status, request_status};
use crate::node::NodeError;

#[derive(Clone, Debug)]
pub struct PeerService {
    shared: Shared,
    shutdown: watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(shared: Shared, shutdown: watch::Receiver<bool>) -> Self {
        PeerService { shared, shutdown }
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), Status> {
        if cluster_id != self.shared.settings.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: this node belongs to cluster {:#x}, the request to {cluster_id:#x}",
                self.shared.settings.cluster_id
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn send(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<SendAck>, Status> {
        let mut stream = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        let mut batches = 0;
        let mut from = None;
        loop {
            let batch = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                batch = stream.message() => batch,
            };
            let batch = match batch {
                Ok(Some(batch)) => batch,
                end => {
                    // The sender died, or closed its stream: if it led,
                    // its followers need not wait out an election timeout.
                    if let Some(peer) = from {
                        self.shared.node.peer_down(peer);
                    }
                    end?;
                    break;
                }
            };
            self.check_cluster(batch.cluster_id)?;
            if batch.to != self.shared.settings.node_id {
                return Err(Status::failed_precondition(format!(
                    "batch for node {}, but this is node {}",
                    batch.to, self.shared.settings.node_id
                )));
            }
            batches += 1;
            if self.shared.settings.endpoint_of(batch.from).is_some() {
                from = Some(batch.from);
            }
            for wire in batch.messages {
                let message = match message_from_wire(wire) {
                    Ok(m) if matches!(m.body, MessageBody::InstallSnapshot { .. }) => {
                        // Only valid with its data, which RaftPeer.Send
                        // does not carry.
                        warn!(
                            from = m.from,
                            "dropping a snapshot message sent without its data"
                        );
                        continue;
                    }
                    Ok(m) if m.from == batch.from && m.to == batch.to => m,
                    Ok(m) => {
                        warn!(
                            from = m.from,
                            to = m.to,
                            "dropping a peer message that disagrees with its batch"
                        );
                        continue;
                    }
                    Err(e) => {
                        warn!(from = batch.from, "dropping a malformed peer message: {e}");
                        continue;
                    }
                };
                if self.shared.node.deliver(message).await.is_err() {
                    return Err(Status::unavailable("node stopped"));
                }
            }
        }
        Ok(Response::new(SendAck { batches }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let mut stream = request.into_inner();
        let chunk = |wire: Option<SnapshotChunk>| -> Result<IncomingChunk, Status> {
            let wire = wire.ok_or_else(|| {
                Status::invalid_argument("the snapshot stream ended before its last chunk")
            })?;
            snapshot_chunk_from_wire(wire).map_err(|e| Status::invalid_argument(e.to_string()))
        };
        let first = chunk(stream.message().await?)?;
        self.check_cluster(first.cluster_id)?;
        let me = self.shared.settings.node_id;
        if first.to != me || self.shared.settings.endpoint_of(first.from).is_none() {
            return Err(Status::failed_precondition(format!(
                "snapshot from node {} for node {}, but this is node {me} of nodes {:?}",
                first.from,
                first.to,
                self.shared
                    .settings
                    .endpoints
                    .iter()
                    .map(|(id, _)| id)
                    .collect::<Vec<_>>()
            )));
        }
        if first.seq != 0 {
            return Err(Status::invalid_argument(format!(
                "a snapshot transfer starts at chunk 0, not {}",
                first.seq
            )));
        }
        let snapshots = self.shared.snapshots.clone();
        let header = first.header;
        let mut receiving = blocking("snapshot receive", move || snapshots.receive(header))
            .await?
            .map_err(snapshot_status)?;
        let started = Instant::now();
        let mut last_report = started;
        info!(
            from = first.from,
            index = first.header.index,
            "receiving snapshot at index {} from node {}",
            first.header.index,
            first.from
        );
        let mut shutdown = self.shutdown.clone();
        let mut next = first.clone();
        while !next.last {
            let data = next.data.clone();
            let (back, added) = blocking("snapshot chunk", move || {
                let added = receiving.add_chunk(&data);
                (receiving, added)
            })
            .await?;
            receiving = back;
            added.map_err(snapshot_status)?;
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                info!(
                    from = first.from,
                    index = first.header.index,
                    "receiving snapshot: {} MiB, {} keys so far",
                    receiving.stats().bytes >> 20,
                    receiving.stats().keys
                );
            }
            let wire = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {
                    return Err(Status::unavailable("node stopping"));
                }
                wire = stream.message() => wire?,
            };
            next = chunk(wire)?;
            let expected = receiving.stats().chunks;
            if next.seq != expected
                || next.header != first.header
                || next.meta != first.meta
                || (next.cluster_id, next.from, next.to, next.term)
                    != (first.cluster_id, first.from, first.to, first.term)
            {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk {} does not follow chunk {} of the same snapshot",
                    next.seq,
                    expected.wrapping_sub(1)
                )));
            }
        }
        let staged = receiving.finish();
        let stats = staged.stats();
        info!(
            from = first.from,
            index = first.header.index,
            "received snapshot at index {} ({} keys, {} bytes in {:.1?})",
            first.header.index,
            stats.keys,
            stats.bytes,
            started.elapsed()
        );
        let message = Message {
            from: first.from,
            to: me,
            term: first.term,
            body: MessageBody::InstallSnapshot { meta: first.meta },
        };
        let installed = self
            .shared
            .node
            .install_snapshot(message, staged)
            .await
            .map_err(|e| node_status(&e))?;
        Ok(Response::new(SnapshotAck {
            bytes_received: stats.bytes,
            installed,
        }))
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let _permit = self.shared.admit()?;
        let request = request.into_inner();
        self.check_cluster(request.cluster_id)?;
        let command = Command::decode(&request.command).map_err(|e| {
            Status::invalid_argument(format!("etcdserver: malformed forwarded command: {e}"))
        })?;
        command
            .validate(&self.shared.storage_options)
            .map_err(|e| request_status(&e))?;
        // Never forwarded again: a node that is not the leader (any more)
        // says so, and the forwarder's client retries.
        let deadline = tokio::time::Instant::now() + self.shared.settings.request_timeout();
        let outcome = self
            .shared
            .node
            .write(request.command, deadline)
            .await
            .map_err(|e| match e {
                NodeError::NotLeader { .. } => Status::unavailable(NOT_LEADER_MESSAGE),
                other => node_status(&other),
            })?;
        Ok(Response::new(write_outcome_to_wire(outcome)))
    }

    async fn lease(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        let request = request.into_inner();
        self.check_cluster(request.cluster_id)?;
        // Never forwarded again: only the leader keeps the clocks.
        let clock = self
            .shared
            .local_lease_clock(request.id, request.renew)
            .ok_or_else(|| Status::unavailable(NOT_LEADER_MESSAGE))?;
        Ok(Response::new(match clock {
            Some((granted_ttl, remaining_ttl)) => LeaseResponse {
                found: true,
                granted_ttl,
                remaining_ttl,
            },
            None => LeaseResponse::default(),
        }))
    }
}
