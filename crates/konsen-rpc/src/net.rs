//! Listeners and connectors: how servers get connections and clients make
//! them.
//!
//! Servers are handed a stream of accepted connections (`serve_*` functions
//! in konsen-server take any `Stream<Item = io::Result<IO>>`), and clients a
//! [`Connector`]. Production uses TCP ([`tcp_incoming`], [`TcpConnector`]);
//! a simulation can pass in-memory pipes instead without touching the code
//! that serves or calls.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A boxed future, as [`Connector::connect`] returns it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Opens a byte stream to an address (`host:port`).
pub trait Connector: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    fn connect(&self, addr: String) -> BoxFuture<io::Result<Self::Io>>;
}

/// Connects over TCP, with Nagle's algorithm off (Raft messages are small
/// and latency-bound).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Io = TcpStream;

    fn connect(&self, addr: String) -> BoxFuture<io::Result<TcpStream>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

/// Timeouts of a client channel.
#[derive(Clone, Copy, Debug)]
pub struct ChannelTimeouts {
    /// How long to wait for a connection.
    pub connect: Duration,
    /// How long one unary call may take; `None` for streams, which live
    /// as long as the connection.
    pub request: Option<Duration>,
}

/// A channel to `addr` (`host:port`) that connects on first use and
/// reconnects through `connector` when the connection breaks.
pub fn lazy_channel<C: Connector>(
    addr: &str,
    connector: C,
    timeouts: ChannelTimeouts,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(timeouts.connect)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    if let Some(request) = timeouts.request {
        endpoint = endpoint.timeout(request);
    }
    let target = addr.to_string();
    let service = tower::service_fn(move |_: Uri| {
        let connect = connector.connect(target.clone());
        async move { connect.await.map(TokioIo::new) }
    });
    Ok(endpoint.connect_with_connector_lazy(service))
}

/// Binds `addr` and returns the accepted TCP connections (Nagle off,
/// offered to h2 as [`Unvectored`]) and the bound address (useful with
/// port 0).
pub async fn tcp_incoming(
    addr: SocketAddr,
) -> io::Result<(
    impl Stream<Item = io::Result<Unvectored<TcpStream>>> + Send + 'static,
    SocketAddr,
)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
        let stream = conn?;
        stream.set_nodelay(true)?;
        Ok(Unvectored(stream))
    });
    Ok((incoming, local))
}

/// A byte stream that tells h2 it takes no vectored writes.
///
/// h2 copies a DATA frame's payload into its write buffer only up to 256
/// bytes when the socket takes vectored writes, and up to 1 KiB when it
/// does not; a larger payload is written from where it lies, and the
/// buffer is flushed first. A response or request carrying a 256-byte
/// value is just over the first limit, so each one cost its own write
/// system call. Behind this wrapper, the frames of all the calls answered
/// (or made) in one turn of the runtime leave in one write.
#[derive(Debug)]
pub struct Unvectored<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Unvectored<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Unvectored<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Lowest and one past the highest port [`unused_local_ports`] picks from:
/// below Linux's default ephemeral range (32768–60999), which outgoing
/// connections and `bind(…:0)` draw from.
const UNUSED_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// Random ports tried before [`unused_local_ports`] gives up.
const UNUSED_PORT_TRIES_MAX: usize = 1_000;

/// `n` distinct ports on 127.0.0.1 that were free a moment ago, for tests
/// and local clusters that must write endpoints down before the servers
/// bind them.
///
/// A port from `bind("127.0.0.1:0")` comes from the ephemeral range, where
/// any process's next outgoing connection may take it as its local port
/// between the check and the server's bind; the server then fails with
/// "address in use". Ports are therefore drawn at random below that range.
pub fn unused_local_ports(n: usize) -> io::Result<Vec<u16>> {
    use std::hash::BuildHasher;
    let seed = std::collections::hash_map::RandomState::new();
    let span = u64::from(UNUSED_PORTS.end - UNUSED_PORTS.start);
    let mut ports = Vec::with_capacity(n);
    for attempt in 0..UNUSED_PORT_TRIES_MAX {
        if ports.len() == n {
            break;
        }
        let port = UNUSED_PORTS.start + (seed.hash_one(attempt) % span) as u16;
        if !ports.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "found {} of {n} free ports in {UNUSED_PORTS:?} after {UNUSED_PORT_TRIES_MAX} tries",
                ports.len()
            ),
        ));
    }
    Ok(ports)
}

/// The DATA frames of one gRPC message as they arrive. A small message
/// comes in one frame, which is kept as it is; only a message split over
/// frames is copied together.
#[derive(Debug, Default)]
pub struct MessageChunks {
    first: Option<Bytes>,
    joined: BytesMut,
}

impl MessageChunks {
    pub fn push(&mut self, chunk: Bytes) {
        match self.first.take() {
            None if self.joined.is_empty() => self.first = Some(chunk),
            None => self.joined.extend_from_slice(&chunk),
            Some(previous) => {
                self.joined.extend_from_slice(&previous);
                self.joined.extend_from_slice(&chunk);
            }
        }
    }

    /// What has arrived so far.
    pub fn received(&self) -> &[u8] {
        self.first.as_deref().unwrap_or(&self.joined[..])
    }

    pub fn into_bytes(self) -> Bytes {
        self.first.unwrap_or_else(|| self.joined.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_chunks_keep_one_frame_and_join_several_in_order() {
        let mut one = MessageChunks::default();
        assert!(one.received().is_empty());
        let frame = Bytes::from_static(b"abc");
        one.push(frame.clone());
        let kept = one.into_bytes();
        assert_eq!(kept, frame);
        assert_eq!(kept.as_ptr(), frame.as_ptr(), "one frame is not copied");

        let mut three = MessageChunks::default();
        for chunk in ["ab", "cd", "e"] {
            three.push(Bytes::from_static(chunk.as_bytes()));
        }
        assert_eq!(three.received(), b"abcde");
        assert_eq!(three.into_bytes(), Bytes::from_static(b"abcde"));
    }

    #[test]
    fn unused_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports = unused_local_ports(5).unwrap();
        assert_eq!(ports.len(), 5);
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 5);
        for port in ports {
            assert!(UNUSED_PORTS.contains(&port));
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
