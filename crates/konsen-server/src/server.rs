//! The one tonic server of a node: the etcd services for clients and
//! RaftPeer for peers, on any stream of accepted connections (TCP in
//! production; a simulation may pass its own).

use std::io;
use std::time::Duration;

use konsen_rpc::etcd::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, maintenance_server::MaintenanceServer,
};
use konsen_rpc::peer::raft_peer_server::RaftPeerServer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::transport::Server;
use tonic::transport::server::Connected;

use crate::services::{ClusterService, KvService, MaintenanceService, PeerService, Shared};

/// What a client message may carry beyond `limits.request_bytes_max`
/// (field tags, lengths, the rest of the request), like etcd's allowance.
/// A larger message is refused by gRPC itself; one in between reaches the
/// size check and gets etcd's "request is too large".
const CLIENT_MESSAGE_OVERHEAD_BYTES: usize = 512 * 1024;
/// The largest peer message batch accepted.
const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` turns true, then stops accepting and returns
/// once open calls finish.
pub async fn serve<S, IO>(
    shared: Shared,
    incoming: S,
    shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error>
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    let client_max = shared.settings.limits.request_bytes_max + CLIENT_MESSAGE_OVERHEAD_BYTES;
    let mut stop = shutdown.clone();
    Server::builder()
        // Peers' streams live for hours; pings find the ones whose other
        // end vanished without a word (a partition, a power cut).
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(
            KvServer::new(KvService::new(shared.clone())).max_decoding_message_size(client_max),
        )
        .add_service(ClusterServer::new(ClusterService::new(shared.clone())))
        .add_service(MaintenanceServer::new(MaintenanceService::new(
            shared.clone(),
        )))
        .add_service(
            RaftPeerServer::new(PeerService::new(shared, shutdown))
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
