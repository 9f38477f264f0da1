//! The one gRPC server of a node: the etcd services for clients and
//! RaftPeer for peers, on any stream of accepted connections (TCP in
//! production; a simulation may pass its own).
//!
//! Each connection is served by hyper's HTTP/2 server. [`Router`] sends
//! the hot client calls (KV Put, Range, DeleteRange) to the unary path in
//! `grpc.rs`, and every other call to the tonic-generated service for its
//! package and service name.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use konsen_rpc::etcd::etcdserverpb::{
    cluster_server::ClusterServer,
    kv_server::{Kv, KvServer},
    maintenance_server::MaintenanceServer,
};
use konsen_rpc::peer::raft_peer_server::RaftPeerServer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tonic::body::Body;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::grpc;
use crate::services::{ClusterService, KvService, MaintenanceService, PeerService, Shared};

/// What a client message may carry beyond `limits.request_bytes_max`
/// (field tags, lengths, the rest of the request), like etcd's allowance.
/// A larger message is refused by gRPC itself; one in between reaches the
/// size check and gets etcd's "request is too large".
const CLIENT_MESSAGE_OVERHEAD_BYTES: usize = 512 * 1024;
/// The largest peer message batch accepted.
const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The largest HTTP/2 frame the other end of a connection (a client, or
/// another node) may send here. At the protocol's default of 16 KiB a
/// leader's append of a few hundred entries went out as a string of
/// frames, and a follower on the same core woke for each.
const FRAME_BYTES_MAX: u32 = 1024 * 1024;

const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the accept loop waits after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves until `shutdown` turns true, then stops accepting, asks every
/// connection to finish (HTTP/2 GOAWAY), and returns once they have.
pub async fn serve<S, IO>(shared: Shared, incoming: S, shutdown: watch::Receiver<bool>)
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = Router::new(shared, shutdown.clone());
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        // Peers' streams live for hours; pings find the ones whose other
        // end vanished without a word (a partition, a power cut).
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_frame_size(FRAME_BYTES_MAX)
        // Like tonic's server and etcd: no per-connection stream limit;
        // `limits.concurrent_requests_max` bounds the calls being served.
        .max_concurrent_streams(None)
        // gRPC has no use for a `date` header; hyper would format and
        // encode one into every answer.
        .auto_date_header(false);

    // Turns true when the accept loop ends: each open connection then
    // sends GOAWAY and finishes the calls it has.
    let (drain_tx, drain) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut stop = shutdown;
    let mut incoming = Box::pin(incoming);
    loop {
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = incoming.next() => match accepted {
                Some(Ok(io)) => {
                    let conn = http2.serve_connection(TokioIo::new(io), router.clone());
                    let mut drain = drain.clone();
                    connections.spawn(async move {
                        let mut conn = std::pin::pin!(conn);
                        tokio::select! {
                            result = conn.as_mut() => return log_end(result),
                            _ = drain.wait_for(|d| *d) => conn.as_mut().graceful_shutdown(),
                        }
                        log_end(conn.await);
                    });
                }
                Some(Err(e)) => {
                    // Out of file descriptors, say: the listener stays
                    // readable, so a pause keeps this from spinning.
                    warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                None => break,
            },
        }
    }
    // The listener closes here, before open connections drain.
    drop(incoming);
    let _ = drain_tx.send(true);
    while connections.join_next().await.is_some() {}
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        debug!("connection ended: {e}");
    }
}

/// Sends each call to the service that serves its path.
#[derive(Clone)]
struct Router {
    /// Shared with `kv_grpc`: a call clones the `Arc`, not the service.
    kv: Arc<KvService>,
    kv_grpc: KvServer<KvService>,
    cluster: ClusterServer<ClusterService>,
    maintenance: MaintenanceServer<MaintenanceService>,
    peer: RaftPeerServer<PeerService>,
    client_message_bytes_max: usize,
}

impl Router {
    fn new(shared: Shared, shutdown: watch::Receiver<bool>) -> Router {
        let client_message_bytes_max =
            shared.settings.limits.request_bytes_max + CLIENT_MESSAGE_OVERHEAD_BYTES;
        let kv = Arc::new(KvService::new(shared.clone()));
        Router {
            kv_grpc: KvServer::from_arc(Arc::clone(&kv))
                .max_decoding_message_size(client_message_bytes_max),
            kv,
            cluster: ClusterServer::new(ClusterService::new(shared.clone())),
            maintenance: MaintenanceServer::new(MaintenanceService::new(shared.clone())),
            peer: RaftPeerServer::new(PeerService::new(shared, shutdown))
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX),
            client_message_bytes_max,
        }
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: http::Request<Incoming>) -> ResponseFuture {
        let max = self.client_message_bytes_max;
        let kv = &self.kv;
        match request.uri().path() {
            "/etcdserverpb.KV/Put" => {
                unary(request, max, kv, |kv, r| async move { kv.put(r).await })
            }
            "/etcdserverpb.KV/Range" => {
                unary(request, max, kv, |kv, r| async move { kv.range(r).await })
            }
            "/etcdserverpb.KV/DeleteRange" => {
                unary(
                    request,
                    max,
                    kv,
                    |kv, r| async move { kv.delete_range(r).await },
                )
            }
            path if path.starts_with("/etcdserverpb.KV/") => forward(self.kv_grpc.clone(), request),
            path if path.starts_with("/etcdserverpb.Cluster/") => {
                forward(self.cluster.clone(), request)
            }
            path if path.starts_with("/etcdserverpb.Maintenance/") => {
                forward(self.maintenance.clone(), request)
            }
            path if path.starts_with("/konsen.raft.RaftPeer/") => {
                forward(self.peer.clone(), request)
            }
            path => {
                let status = Status::unimplemented(format!("konsen does not support {path}"));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Serves a KV call on the lean unary path (`grpc.rs`).
fn unary<Req, Resp, Fut>(
    request: http::Request<Incoming>,
    message_bytes_max: usize,
    kv: &Arc<KvService>,
    handle: fn(Arc<KvService>, tonic::Request<Req>) -> Fut,
) -> ResponseFuture
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + 'static,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
{
    let kv = Arc::clone(kv);
    Box::pin(async move { Ok(grpc::unary(request, message_bytes_max, |r| handle(kv, r)).await) })
}

/// Hands a call to a tonic-generated service.
fn forward<S>(service: S, request: http::Request<Incoming>) -> ResponseFuture
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    Box::pin(service.oneshot(request.map(Body::new)))
}
