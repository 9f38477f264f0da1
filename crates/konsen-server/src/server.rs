//! The one gRPC server of a node: the etcd services for clients and
//! RaftPeer for peers, on any stream of accepted connections (TCP in
//! production; a simulation may pass its own).
//!
//! Each connection is served on h2 directly (`serve_connection`): a KV Put
//! is answered without a task of its own (`put.rs`); every other call runs
//! in a task, where [`Router`] sends the hot client calls (KV Range and
//! DeleteRange) to the unary path in `grpc.rs` and the rest to the
//! tonic-generated service for its package and service name, and
//! `send_answer` streams the answer back within HTTP/2's flow control.
//! This is the work hyper's server did per stream, less what gRPC does
//! not use (docs/performance.md, item 20).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Ping, RecvStream, SendStream};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use konsen_rpc::etcd::etcdserverpb::{
    cluster_server::ClusterServer,
    kv_server::{Kv, KvServer},
    lease_server::LeaseServer,
    maintenance_server::MaintenanceServer,
    watch_server::WatchServer,
};
use konsen_rpc::peer::raft_peer_server::RaftPeerServer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tonic::body::Body;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::grpc;
use crate::put::{self, PutPath};
use crate::services::{
    ClusterService, KvService, LeaseService, MaintenanceService, PeerService, Shared, WatchService,
};

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
/// HTTP/2 flow-control windows offered to the other end, per stream and
/// per connection (hyper's defaults, which this server had before).
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// The largest header block accepted on a call.
const HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;
/// Answer data buffered per stream before it waits for the window.
const SEND_BUFFER_BYTES_MAX: usize = 400 * 1024;
/// Streams this server may reset for the other end's protocol errors
/// before it drops the connection (a guard against floods of bad frames).
const LOCAL_ERROR_RESETS_MAX: usize = 1024;

const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the accept loop waits after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

const PUT_PATH: &str = "/etcdserverpb.KV/Put";

/// Serves until `shutdown` turns true, then stops accepting, asks every
/// connection to finish (HTTP/2 GOAWAY), and returns once they have.
pub async fn serve<S, IO>(shared: Shared, incoming: S, shutdown: watch::Receiver<bool>)
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = Router::new(shared, shutdown.clone());

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
                    let router = router.clone();
                    let drain = drain.clone();
                    connections.spawn(async move {
                        if let Err(e) = serve_connection(io, router, drain).await {
                            debug!("connection ended: {e}");
                        }
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

/// Serves one connection until it closes: accepts its calls, pings it
/// every `KEEPALIVE_INTERVAL` (peers' streams live for hours, and a ping
/// finds the ones whose other end vanished without a word: a partition,
/// a power cut), and finishes its calls after GOAWAY once `drain` turns
/// true.
async fn serve_connection<IO>(
    io: IO,
    router: Router,
    mut drain: watch::Receiver<bool>,
) -> Result<(), h2::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    // No limit on the streams of a connection, like tonic's server and
    // etcd: `limits.concurrent_requests_max` bounds the calls served.
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(FRAME_BYTES_MAX)
        .max_header_list_size(HEADER_LIST_BYTES_MAX)
        .max_send_buffer_size(SEND_BUFFER_BYTES_MAX)
        .max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS_MAX));
    let mut conn = builder.handshake::<_, Bytes>(io).await?;
    let mut ping = conn
        .ping_pong()
        .expect("a new connection hands out its PingPong once");
    // Both live across the loop's turns, so that accepting a call arms no
    // timer and registers no waiter of its own.
    let keepalive = tokio::time::sleep(KEEPALIVE_INTERVAL);
    tokio::pin!(keepalive);
    let drained = async move {
        let _ = drain.wait_for(|d| *d).await;
    };
    tokio::pin!(drained);
    let (mut awaiting_pong, mut draining) = (false, false);
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => router.dispatch(request, respond),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            () = &mut drained, if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
            () = &mut keepalive => {
                if awaiting_pong {
                    debug!("closing a connection: no answer to a ping in {KEEPALIVE_TIMEOUT:?}");
                    return Ok(());
                }
                ping.send_ping(Ping::opaque())?;
                awaiting_pong = true;
                keepalive.as_mut().reset(Instant::now() + KEEPALIVE_TIMEOUT);
            }
            pong = poll_fn(|cx| ping.poll_pong(cx)), if awaiting_pong => {
                pong?;
                awaiting_pong = false;
                keepalive.as_mut().reset(Instant::now() + KEEPALIVE_INTERVAL);
            }
        }
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
    watch: WatchServer<WatchService>,
    lease: LeaseServer<LeaseService>,
    peer: RaftPeerServer<PeerService>,
    put: Arc<PutPath>,
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
            put: PutPath::new(shared.clone(), client_message_bytes_max),
            watch: WatchServer::new(WatchService::new(shared.clone(), shutdown.clone()))
                .max_decoding_message_size(client_message_bytes_max),
            lease: LeaseServer::new(LeaseService::new(shared.clone())),
            peer: RaftPeerServer::new(PeerService::new(shared, shutdown))
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX),
            client_message_bytes_max,
        }
    }

    /// Serves an accepted call: a Put on the connection's own task, any
    /// other in a task of its own.
    fn dispatch(&self, request: http::Request<RecvStream>, respond: SendResponse<Bytes>) {
        if request.uri().path() == PUT_PATH {
            return put::serve(&self.put, request, respond);
        }
        let answer = self.call(request.map(H2Body::new));
        tokio::spawn(serve_call(answer, respond));
    }

    fn call(&self, request: http::Request<H2Body>) -> ResponseFuture {
        let max = self.client_message_bytes_max;
        let kv = &self.kv;
        match request.uri().path() {
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
            path if path.starts_with("/etcdserverpb.Watch/") => {
                forward(self.watch.clone(), request)
            }
            path if path.starts_with("/etcdserverpb.Lease/") => {
                forward(self.lease.clone(), request)
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

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// Serves a KV call on the lean unary path (`grpc.rs`).
fn unary<Req, Resp, Fut>(
    request: http::Request<H2Body>,
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
fn forward<S>(service: S, request: http::Request<H2Body>) -> ResponseFuture
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    Box::pin(service.oneshot(request.map(Body::new)))
}

/// A call's task: waits for its answer, and sends it. If the client resets
/// the stream first, the handler is dropped unfinished.
async fn serve_call(answer: ResponseFuture, mut respond: SendResponse<Bytes>) {
    let response = tokio::select! {
        // The handler first, as hyper did: when the connection breaks, a
        // handler reading the request (a peer's message stream) sees the
        // error and acts on it (the peer is down) before it is dropped.
        biased;
        response = answer => match response {
            Ok(response) => response,
            Err(never) => match never {},
        },
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let (parts, body) = response.into_parts();
    let end = body.is_end_stream();
    let Ok(stream) = respond.send_response(http::Response::from_parts(parts, ()), end) else {
        return;
    };
    if !end {
        send_answer(body, stream).await;
    }
}

/// Streams an answer's body and trailers, frame by frame, each sent once
/// the client's window has room for it; stops if the client resets.
async fn send_answer(mut body: Body, mut stream: SendStream<Bytes>) {
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        let frame = match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Ok(frame)) => frame,
            Some(Err(status)) => {
                debug!("an answer's body failed: {status}");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if send_data(&mut stream, data).await.is_err() {
                    return;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                }
                return;
            }
        }
    }
}

/// Sends `data` in pieces the flow-control window admits.
async fn send_data(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            // The stream can send no more (the client reset it).
            None => return Ok(()),
        };
        if granted > 0 {
            let piece = data.split_to(granted.min(data.len()));
            stream.send_data(piece, false)?;
        }
    }
    Ok(())
}

/// A request body as it arrives on its h2 stream. Each piece is given back
/// to the flow-control window as it is handed on.
pub(crate) struct H2Body {
    recv: RecvStream,
    data_done: bool,
}

impl H2Body {
    pub(crate) fn new(recv: RecvStream) -> H2Body {
        H2Body {
            recv,
            data_done: false,
        }
    }
}

impl http_body::Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
