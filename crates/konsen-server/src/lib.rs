//! konsen-server as a library: everything a node is, with its network
//! handed in, so that the binary (`main.rs`) runs it on TCP and a
//! simulation or an in-process test can run it on anything else.
//!
//! [`run_node`] takes the node's settings, its opened storage, a stream of
//! accepted connections and a [`Connector`] for reaching peers, and serves
//! until `stop` completes.
//!
//! # Layout
//!
//! * `args.rs`, `settings.rs`: flags, the cluster file, the environment.
//! * `node/`: the node loop owning the Raft core and the storage.
//! * `feed.rs`: the applied changes, from the node loop to the watch streams.
//! * `transport.rs`: outbound peer streams.
//! * `services/`: the gRPC services; `server.rs`: the server hosting them.
//! * `logging.rs`: log output.

pub mod args;
mod compactor;
mod feed;
mod grpc;
mod lessor;
pub mod logging;
mod node;
mod periodic;
mod put;
mod server;
mod services;
pub mod settings;
mod transport;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use konsen_rpc::net::{ChannelTimeouts, Connector, lazy_channel};
use konsen_rpc::peer::raft_peer_client::RaftPeerClient;
use konsen_storage::{NodeIdentity, RocksStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio_stream::Stream;
use tracing::info;

use crate::services::Shared;
use crate::settings::Settings;

/// How long open calls (long-lived peer streams among them) get to finish
/// once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Opens (or creates) this node's data dir.
pub fn open_store(settings: &Settings) -> Result<RocksStore> {
    let identity = NodeIdentity {
        cluster_id: settings.cluster_id,
        node_id: settings.node_id,
    };
    let store = RocksStore::open(&settings.data_dir, identity, settings.storage_options())
        .with_context(|| format!("opening the data dir {}", settings.data_dir.display()))?;
    info!("RocksDB storage at {}", settings.data_dir.display());
    Ok(store)
}

/// Runs a node: restores the Raft core from `store`, streams messages to
/// peers through `connector`, serves peers and clients on `incoming`, and
/// stops when `stop` completes: stop accepting, let the node loop finish
/// the `Ready` in hand, close the storage. Returns an error if the node
/// loop or the server fails first.
pub async fn run_node<C, S, IO>(
    settings: Arc<Settings>,
    store: RocksStore,
    incoming: S,
    connector: C,
    stop: impl Future<Output = ()> + Send,
) -> Result<()>
where
    C: Connector,
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let transport = transport::Transport::start(&settings, connector.clone(), shutdown_rx.clone());
    // One client per peer for forwarded writes and snapshot transfers. No
    // per-call timeout on the channel: a snapshot takes as long as it
    // takes, and a forwarded write runs under the client request's own
    // `limits.request_timeout_ms`.
    let mut peers = HashMap::new();
    for (id, endpoint) in &settings.endpoints {
        if *id != settings.node_id {
            let timeouts = ChannelTimeouts {
                connect: transport::CONNECT_TIMEOUT,
                request: None,
            };
            let channel = lazy_channel(endpoint, connector.clone(), timeouts)
                .with_context(|| format!("endpoint {endpoint} of node {id}"))?;
            peers.insert(*id, RaftPeerClient::new(channel));
        }
    }
    let peers = Arc::new(peers);
    let snapshots = store.kv.snapshots();
    let reader = store.kv.reader();
    let hub = feed::WatchHub::new();
    let lessor = lessor::Lessor::default();
    let node = node::spawn(
        Arc::clone(&settings),
        store,
        transport,
        Arc::clone(&peers),
        hub.clone(),
        lessor.clone(),
        shutdown_rx.clone(),
    )?;
    let shared = Shared {
        settings: Arc::clone(&settings),
        node: node.handle.clone(),
        peers,
        permits: Arc::new(Semaphore::new(settings.limits.concurrent_requests_max)),
        storage_options: settings.storage_options(),
        snapshots,
        reader,
        hub,
        watch_streams: Arc::new(Semaphore::new(settings.limits.watch_streams_max)),
        lessor: lessor.clone(),
    };
    tokio::spawn(compactor::run(shared.clone(), shutdown_rx.clone()));
    tokio::spawn(lessor::run_expiry(
        shared.clone(),
        lessor,
        shutdown_rx.clone(),
    ));
    let mut server = tokio::spawn(server::serve(shared, incoming, shutdown_rx.clone()));
    let mut node_task = node.task;

    let outcome = tokio::select! {
        () = stop => Ok(()),
        result = &mut node_task => {
            let result = result.context("node loop panicked").and_then(|r| r);
            Err(result.err().unwrap_or_else(|| anyhow!("node loop stopped unexpectedly")))
        }
        result = &mut server => Err(match result {
            Ok(()) => anyhow!("server stopped unexpectedly"),
            Err(e) => anyhow::Error::new(e).context("server task panicked"),
        }),
    };
    let _ = shutdown_tx.send(true);
    if !server.is_finished()
        && tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
            .await
            .is_err()
    {
        server.abort();
    }
    if !node_task.is_finished() {
        node_task.await.context("node loop panicked")??;
    }
    if outcome.is_ok() {
        info!("stopped");
    }
    outcome
}
