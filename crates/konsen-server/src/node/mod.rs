//! The Raft node: one task owning the core ([`konsen_core::RawNode`]) and
//! the storage, and the handle the services use to reach it.
//!
//! * `driver.rs`: the loop (ticks, peer messages, client requests, `Ready`).
//! * `waiters.rs`: clients waiting for their write to apply or their read
//!   to become safe.
//! * `snapshot.rs`: sending a snapshot to a follower that needs purged
//!   entries (receiving is the peer service's).
//!
//! Everything goes through bounded channels, never an unbounded queue: a
//! client request meeting a full channel is an immediate "too many
//! requests"; a peer message waits (back-pressure on the peer's stream).

mod driver;
mod snapshot;
mod waiters;

use bytes::Bytes;
use konsen_core::{Index, Message, NodeId, Role, Term};
use konsen_rpc::convert::WriteOutcome;
use konsen_storage::StagedSnapshot;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub use driver::spawn;
pub(crate) use waiters::{WriteCallback, WriteReply};

/// Why the node could not serve a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("no leader is known")]
    NoLeader,
    #[error("too many requests: {0}")]
    Busy(String),
    #[error("leadership changed before the request completed; it may or may not have been applied")]
    LeaderChanged,
    #[error("the read could not be confirmed by the leader")]
    ReadFailed,
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("invalid request: {0}")]
    Request(#[from] konsen_storage::RequestError),
    #[error("the node is shutting down")]
    Stopped,
    #[error("the request's deadline passed")]
    TimedOut,
    #[error("snapshot refused: {0}")]
    SnapshotRefused(String),
}

impl From<konsen_storage::StorageError> for NodeError {
    /// A refused request stays one; anything else is a storage failure.
    fn from(e: konsen_storage::StorageError) -> Self {
        match e {
            konsen_storage::StorageError::Request(e) => NodeError::Request(e),
            e => NodeError::Storage(e.to_string()),
        }
    }
}

/// What a client asks of the node loop.
#[derive(Debug)]
pub(crate) enum Request {
    /// Propose an encoded, validated command (leader only).
    Write {
        command: Bytes,
        /// When the loop gives up waiting for it (`NodeError::TimedOut`).
        deadline: Instant,
        reply: WriteReply,
    },
    /// Wait until a linearizable read may be served here (ReadIndex: the
    /// leader confirmed its read index, and this node applied up to it);
    /// the answer is the term. The services then read the local state
    /// themselves (`KvReader`), as they do for serializable reads.
    ReadIndex {
        reply: oneshot::Sender<Result<Term, NodeError>>,
    },
}

/// What the peer service hands the node loop.
#[derive(Debug)]
pub(crate) enum PeerEvent {
    Message(Message),
    /// The stream from this peer broke (its process died or closed it).
    Down(NodeId),
    /// A snapshot received whole from the leader, and the message that
    /// describes it. The answer says whether it was installed (false: the
    /// log already covered it).
    Snapshot {
        message: Message,
        staged: StagedSnapshot,
        reply: oneshot::Sender<Result<bool, NodeError>>,
    },
}

/// The node as the status page sees it, published after every `Ready`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub last_index: Index,
    pub commit: Index,
    pub applied: Index,
    /// The index the log was last compacted to, or the last snapshot
    /// installed (0 if neither happened).
    pub snapshot_index: Index,
    pub revision: i64,
    pub data_size_bytes: u64,
}

/// A client request meeting the node loop's full request queue.
fn busy() -> NodeError {
    NodeError::Busy("the node's request queue is full (limits.pending_proposals_max)".into())
}

/// The services' handle on the node loop. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    requests: mpsc::Sender<Request>,
    peer_events: mpsc::Sender<PeerEvent>,
    status: watch::Receiver<NodeStatus>,
}

impl NodeHandle {
    /// Proposes `command` and waits until it is applied, or fails with
    /// [`NodeError::TimedOut`] at the first tick after `deadline` (the loop
    /// keeps the time, so a write costs no timer of its own). Fails with
    /// [`NodeError::NotLeader`] on a follower, so that the caller can
    /// forward it.
    pub async fn write(
        &self,
        command: Bytes,
        deadline: Instant,
    ) -> Result<WriteOutcome, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Write {
            command,
            deadline,
            reply: WriteReply::Channel(reply),
        })?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// [`NodeHandle::write`] without a task waiting: the node loop calls
    /// `answer` with the outcome, on its own thread, so it must not block.
    /// If the loop cannot take the write, `answer` runs here and now.
    pub(crate) fn write_then(&self, command: Bytes, deadline: Instant, answer: WriteCallback) {
        let request = Request::Write {
            command,
            deadline,
            reply: WriteReply::Call(answer),
        };
        if let Err(e) = self.requests.try_send(request) {
            let (error, request) = match e {
                mpsc::error::TrySendError::Full(r) => (busy(), r),
                mpsc::error::TrySendError::Closed(r) => (NodeError::Stopped, r),
            };
            if let Request::Write { reply, .. } = request {
                reply.send(Err(error));
            }
        }
    }

    /// Waits until this node's applied state may serve a linearizable read
    /// begun now; returns the term in which that was confirmed.
    pub async fn read_index(&self) -> Result<Term, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::ReadIndex { reply })?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    fn submit(&self, request: Request) -> Result<(), NodeError> {
        self.requests.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => busy(),
            mpsc::error::TrySendError::Closed(_) => NodeError::Stopped,
        })
    }

    /// Hands a message from a peer to the node; waits while the inbound
    /// queue is full (back-pressure on the peer's stream).
    pub async fn deliver(&self, message: Message) -> Result<(), NodeError> {
        self.peer_events
            .send(PeerEvent::Message(message))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Tells the node that the message stream from `peer` broke, so that a
    /// follower that lost its leader campaigns early. Dropped if the
    /// inbound queue is full: the election timeout still catches it.
    pub fn peer_down(&self, peer: NodeId) {
        let _ = self.peer_events.try_send(PeerEvent::Down(peer));
    }

    /// Hands a received snapshot to the node, which installs it if its
    /// core accepts `message`; answers whether it did.
    pub async fn install_snapshot(
        &self,
        message: Message,
        staged: StagedSnapshot,
    ) -> Result<bool, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.peer_events
            .send(PeerEvent::Snapshot {
                message,
                staged,
                reply,
            })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// The latest published status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }
}
