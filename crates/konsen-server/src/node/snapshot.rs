//! Sending a snapshot to a follower that needs entries this leader has
//! purged (`RaftPeer.InstallSnapshot`).
//!
//! The core asks with an `InstallSnapshot` message naming its compaction
//! point. The snapshot sent is the state machine as of a consistent
//! RocksDB view taken now, at the applied index `A` (at or past that
//! point), and its description says `A` and the term of entry `A`: the
//! follower's core installs exactly what the data holds. A blocking task
//! reads the view in chunks of at most `snapshot_chunk_bytes_max` bytes;
//! at most `SNAPSHOT_CHUNKS_IN_FLIGHT_MAX` wait for the network. The
//! outcome goes back to the node loop, which reports it to the core.

use std::cell::Cell;
use std::time::{Duration, Instant};

use konsen_core::{Message, MessageBody};
use konsen_rpc::convert::{SnapshotChunk, snapshot_chunk_to_wire};
use konsen_rpc::peer::raft_peer_client::RaftPeerClient;
use konsen_storage::{SnapshotHeader, Snapshots};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

/// Chunks read ahead of the network.
const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX: usize = 4;
/// How often a long transfer logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// A failed transfer is reported this much later, so that the core's
/// retry does not spin against a follower that is down.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Streams a snapshot to `message.to` as `message` (an `InstallSnapshot`
/// from the core) asks. Returns whether the follower has the snapshot's
/// state now (installed, or already covered by its log).
pub(super) async fn send(
    client: RaftPeerClient<Channel>,
    snapshots: Snapshots,
    cluster_id: u64,
    message: Message,
    chunk_bytes_max: usize,
) -> bool {
    let MessageBody::InstallSnapshot { meta } = message.body else {
        unreachable!(
            "snapshot send invariant: called with a {} message",
            message.body.name()
        );
    };
    let to = message.to;
    let started = Instant::now();
    let (tx, rx) = mpsc::channel(SNAPSHOT_CHUNKS_IN_FLIGHT_MAX);
    let base = SnapshotChunk {
        cluster_id,
        from: message.from,
        to,
        term: message.term,
        meta,
        header: SnapshotHeader {
            index: 0,
            term: 0,
            revision: 0,
        },
        seq: 0,
        data: Default::default(),
        last: false,
    };
    let reader =
        tokio::task::spawn_blocking(move || read_chunks(&snapshots, chunk_bytes_max, base, &tx));
    let mut client = client.max_encoding_message_size(usize::MAX);
    let call = client.install_snapshot(ReceiverStream::new(rx));
    let (call, read) = tokio::join!(call, reader);
    let header = match read {
        Ok(Ok(header)) => header,
        Ok(Err(e)) => {
            warn!(to, "cannot read a snapshot to send: {e}");
            return false;
        }
        Err(e) => {
            warn!(to, "snapshot reader failed: {e}");
            return false;
        }
    };
    match call {
        Ok(ack) => {
            let ack = ack.into_inner();
            info!(
                to,
                index = header.index,
                bytes = ack.bytes_received,
                installed = ack.installed,
                "sent snapshot at index {} to node {to} ({} bytes in {:.1?})",
                header.index,
                ack.bytes_received,
                started.elapsed()
            );
            true
        }
        Err(status) if status.code() == tonic::Code::Unavailable => {
            // The follower is down or unreachable: the usual case, retried.
            debug!(
                to,
                "cannot send a snapshot to node {to}: {}",
                status.message()
            );
            false
        }
        Err(status) => {
            warn!(
                to,
                index = header.index,
                "sending a snapshot to node {to} failed after {:.1?}: {}: {}",
                started.elapsed(),
                status.code(),
                status.message()
            );
            false
        }
    }
}

/// Reads the snapshot into wire chunks on `tx` (blocking), ending with an
/// empty `last` chunk. Returns the header of what it read.
fn read_chunks(
    snapshots: &Snapshots,
    chunk_bytes_max: usize,
    base: SnapshotChunk,
    tx: &mpsc::Sender<konsen_rpc::peer::SnapshotChunk>,
) -> Result<SnapshotHeader, String> {
    let header = Cell::new(None);
    let seq = Cell::new(0u64);
    let sent_bytes = Cell::new(0u64);
    let last_report = Cell::new(Instant::now());
    let chunk = |header: SnapshotHeader, data: Vec<u8>, last: bool| {
        let mut meta = base.meta.clone();
        meta.index = header.index;
        meta.term = header.term;
        let chunk = SnapshotChunk {
            meta,
            header,
            seq: seq.get(),
            data: data.into(),
            last,
            ..base.clone()
        };
        seq.set(seq.get() + 1);
        snapshot_chunk_to_wire(chunk)
    };
    let stats = snapshots
        .read(
            chunk_bytes_max,
            |h| {
                debug!(
                    to = base.to,
                    index = h.index,
                    term = h.term,
                    "sending snapshot at index {} to node {}",
                    h.index,
                    base.to
                );
                header.set(Some(h));
                true
            },
            |data| {
                let h = header
                    .get()
                    .expect("snapshot read invariant: header before chunks");
                sent_bytes.set(sent_bytes.get() + data.len() as u64);
                if last_report.get().elapsed() >= PROGRESS_EVERY {
                    last_report.set(Instant::now());
                    info!(
                        to = base.to,
                        index = h.index,
                        "sending snapshot to node {}: {} MiB so far",
                        base.to,
                        sent_bytes.get() >> 20
                    );
                }
                tx.blocking_send(chunk(h, data, false)).is_ok()
            },
        )
        .map_err(|e| e.to_string())?;
    let h = header
        .get()
        .ok_or_else(|| "the snapshot read stopped before its header".to_string())?;
    let _ = tx.blocking_send(chunk(h, Vec::new(), true));
    tracing::debug!(
        to = base.to,
        keys = stats.keys,
        chunks = stats.chunks,
        "snapshot read"
    );
    Ok(h)
}

/// The snapshot sends one node may run at once.
pub(super) const SNAPSHOT_SENDS_MAX: usize = 16;
