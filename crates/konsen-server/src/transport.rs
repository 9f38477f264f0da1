//! Outbound Raft messages: one bounded queue and one long-lived stream
//! task per peer.
//!
//! The node loop never waits for the network: [`Transport::send`] puts a
//! message on its peer's queue, or drops it when the queue is full (Raft
//! tolerates lost messages; the leader retries). Each peer's task batches
//! what is queued into `MessageBatch`es on a client stream
//! (`RaftPeer.Send`). It watches the stream while idle, so a dead peer is
//! noticed when it dies rather than at the next message; it reconnects
//! with exponential backoff, retrying the batch that found the stream
//! dead once and dropping what was queued meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use konsen_core::{Message, MessageBody, NodeId};
use konsen_rpc::convert::message_to_wire;
use konsen_rpc::net::{ChannelTimeouts, Connector, lazy_channel};
use konsen_rpc::peer::{MessageBatch, raft_peer_client::RaftPeerClient};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::settings::Settings;

/// Messages queued for one peer.
const PEER_QUEUE_MAX: usize = 4096;
/// Messages in one batch on the wire.
const BATCH_MESSAGES_MAX: usize = 256;
/// Approximate bytes in one batch (at least one message is always sent).
const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Batches buffered in front of one stream.
const STREAM_BATCHES_MAX: usize = 16;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Kept short: messages queued while backing off are dropped, and an
/// election may need this peer right after it restarts.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// A stream that lived this long counts as healthy: the next failure
/// starts the backoff from its minimum again.
const STREAM_HEALTHY_AFTER: Duration = Duration::from_secs(1);
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The node loop's way to send messages to peers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Transport {
    queues: Arc<HashMap<NodeId, mpsc::Sender<Message>>>,
}

impl Transport {
    /// Starts one stream task per peer of `settings`; they stop when
    /// `shutdown` turns true.
    pub fn start<C: Connector>(
        settings: &Settings,
        connector: C,
        shutdown: watch::Receiver<bool>,
    ) -> Transport {
        let mut queues = HashMap::new();
        for (id, endpoint) in &settings.endpoints {
            if *id == settings.node_id {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            queues.insert(*id, tx);
            let peer = PeerStream {
                cluster_id: settings.cluster_id,
                from: settings.node_id,
                to: *id,
                endpoint: endpoint.clone(),
            };
            let connector = connector.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => {}
                    () = peer.run(rx, connector) => {}
                }
            });
        }
        Transport {
            queues: Arc::new(queues),
        }
    }

    /// Queues `message` for its recipient, or drops it if the queue is full.
    pub fn send(&self, message: Message) {
        let Some(queue) = self.queues.get(&message.to) else {
            warn!(to = message.to, "dropping a message for an unknown node");
            return;
        };
        if let Err(e) = queue.try_send(message) {
            let m = e.into_inner();
            debug!(
                to = m.to,
                kind = m.body.name(),
                "peer queue full or closed; message dropped"
            );
        }
    }
}

/// One peer's outbound stream.
struct PeerStream {
    cluster_id: u64,
    from: NodeId,
    to: NodeId,
    endpoint: String,
}

impl PeerStream {
    async fn run<C: Connector>(self, mut queue: mpsc::Receiver<Message>, connector: C) {
        let timeouts = ChannelTimeouts {
            connect: CONNECT_TIMEOUT,
            request: None,
        };
        let channel = match lazy_channel(&self.endpoint, connector, timeouts) {
            Ok(c) => c,
            Err(e) => {
                warn!(peer = self.to, endpoint = %self.endpoint, "bad peer endpoint: {e}");
                return;
            }
        };
        let mut backoff = BACKOFF_MIN;
        let mut was_connected = true;
        // A batch that found its stream dead gets one more try on the
        // next stream: it may be the vote that ends an election.
        let mut retry: Option<MessageBatch> = None;
        loop {
            // Idle peers hold no stream open until there is something to say.
            let first = match retry.take() {
                Some(batch) => batch,
                None => match queue.recv().await {
                    Some(m) => self.batch(m, &mut queue),
                    None => return,
                },
            };
            let started = Instant::now();
            let (tx, rx) = mpsc::channel(STREAM_BATCHES_MAX);
            let mut client =
                RaftPeerClient::new(channel.clone()).max_encoding_message_size(usize::MAX);
            let mut call = tokio::spawn(async move { client.send(ReceiverStream::new(rx)).await });
            let mut failed = tx.send(first).await.err().map(|e| e.0);
            let mut ended = None;
            while failed.is_none() {
                // Wait for the next message, but notice a dead stream at
                // once (the peer died): the next message should not be the
                // one that finds out.
                let next = tokio::select! {
                    biased;
                    outcome = &mut call => {
                        ended = Some(outcome);
                        break;
                    }
                    next = queue.recv() => next,
                };
                let Some(next) = next else { return };
                let batch = self.batch(next, &mut queue);
                failed = tx.send(batch).await.err().map(|e| e.0);
            }
            drop(tx);
            let outcome = match ended {
                Some(outcome) => outcome,
                // The stream refused a batch, so the call is ending.
                None => call.await,
            };
            let lived = started.elapsed();
            if lived >= STREAM_HEALTHY_AFTER {
                backoff = BACKOFF_MIN;
            }
            let reason = match outcome {
                Ok(Ok(_)) => "stream closed by peer".to_string(),
                Ok(Err(status)) => format!("{}: {}", status.code(), status.message()),
                Err(e) => format!("stream task failed: {e}"),
            };
            if was_connected {
                info!(peer = self.to, endpoint = %self.endpoint, "peer stream down ({reason}); reconnecting");
            } else {
                debug!(peer = self.to, endpoint = %self.endpoint, "peer still unreachable: {reason}");
            }
            // A batch is retried once, on a stream that had lived.
            retry = failed.filter(|_| was_connected || lived >= STREAM_HEALTHY_AFTER);
            was_connected = lived >= STREAM_HEALTHY_AFTER;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            // What queued up while the peer was away is stale.
            while queue.try_recv().is_ok() {}
        }
    }

    /// `first` and what else is queued, up to the batch limits.
    fn batch(&self, first: Message, queue: &mut mpsc::Receiver<Message>) -> MessageBatch {
        let mut bytes = message_bytes(&first);
        let mut messages = vec![message_to_wire(&first)];
        while messages.len() < BATCH_MESSAGES_MAX && bytes < BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok(m) => {
                    bytes += message_bytes(&m);
                    messages.push(message_to_wire(&m));
                }
                Err(_) => break,
            }
        }
        MessageBatch {
            cluster_id: self.cluster_id,
            from: self.from,
            to: self.to,
            messages,
        }
    }
}

/// Roughly how many bytes a message takes on the wire.
fn message_bytes(m: &Message) -> usize {
    const HEADER_BYTES: usize = 64;
    match &m.body {
        MessageBody::Append { entries, .. } => {
            HEADER_BYTES + entries.iter().map(|e| e.size_bytes()).sum::<usize>()
        }
        _ => HEADER_BYTES,
    }
}
