//! Nodes run in this process on an in-memory network, through the same
//! injected listener and connector the binary fills with TCP. The network
//! can cut links, which real processes on 127.0.0.1 cannot: this is where
//! partitions are tested.

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use konsen_rpc::etcd::etcdserverpb::{
    PutRequest, RangeRequest, StatusRequest, kv_client::KvClient,
    maintenance_client::MaintenanceClient,
};
use konsen_rpc::net::{BoxFuture, ChannelTimeouts, Connector, lazy_channel};
use konsen_server::settings::{AutoCompaction, Limits, Settings};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const WAIT_MAX: Duration = Duration::from_secs(20);
/// Bytes buffered in one direction of an in-memory connection.
const PIPE_BYTES_MAX: usize = 256 * 1024;
/// Connections waiting to be accepted by one node.
const ACCEPT_QUEUE_MAX: usize = 64;

/// Where a node accepts connections: its id and its accept queue.
type Listener = (u64, mpsc::Sender<io::Result<Conn>>);

/// Which node addresses listen, and which links are cut. Node 0 stands
/// for test clients, whose links are never cut.
#[derive(Default)]
struct Net {
    listeners: Mutex<HashMap<String, Listener>>,
    cut: Mutex<HashSet<(u64, u64)>>,
}

impl Net {
    fn is_cut(&self, a: u64, b: u64) -> bool {
        self.cut.lock().unwrap().contains(&(a.min(b), a.max(b)))
    }

    fn set_cut(&self, a: u64, b: u64, cut: bool) {
        let key = (a.min(b), a.max(b));
        let mut set = self.cut.lock().unwrap();
        if cut {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }
}

/// One end of an in-memory connection between two nodes. Fails every read
/// and write once the link between them is cut.
struct Conn {
    io: DuplexStream,
    net: Arc<Net>,
    ends: (u64, u64),
}

impl Conn {
    fn check(&self) -> io::Result<()> {
        if self.net.is_cut(self.ends.0, self.ends.1) {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "link cut"));
        }
        Ok(())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Connects node `from` to the address asked for, unless the link is cut.
#[derive(Clone)]
struct MemConnector {
    net: Arc<Net>,
    from: u64,
}

impl Connector for MemConnector {
    type Io = Conn;

    fn connect(&self, addr: String) -> BoxFuture<io::Result<Conn>> {
        let net = Arc::clone(&self.net);
        let from = self.from;
        Box::pin(async move {
            let (to, accept) = net
                .listeners
                .lock()
                .unwrap()
                .get(&addr)
                .cloned()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::ConnectionRefused, "nothing listens there")
                })?;
            if net.is_cut(from, to) {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "link cut"));
            }
            let (ours, theirs) = tokio::io::duplex(PIPE_BYTES_MAX);
            let server_end = Conn {
                io: theirs,
                net: Arc::clone(&net),
                ends: (to, from),
            };
            accept
                .send(Ok(server_end))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "listener gone"))?;
            Ok(Conn {
                io: ours,
                net,
                ends: (from, to),
            })
        })
    }
}

struct MemCluster {
    net: Arc<Net>,
    _dir: tempfile::TempDir,
    endpoints: Vec<String>,
    nodes: Vec<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

impl MemCluster {
    fn start(n: u64) -> MemCluster {
        Self::start_with(
            n,
            Limits {
                request_timeout_ms: 2000,
                ..Limits::default()
            },
        )
    }

    fn start_with(n: u64, limits: Limits) -> MemCluster {
        let net = Arc::new(Net::default());
        let dir = tempfile::tempdir().unwrap();
        let endpoints: Vec<String> = (1..=n).map(|id| format!("node-{id}:2379")).collect();
        let mut nodes = Vec::new();
        for id in 1..=n {
            let settings = Arc::new(Settings {
                source: "in-memory test".into(),
                cluster_id: 42,
                node_id: id,
                endpoints: endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (i as u64 + 1, e.clone()))
                    .collect(),
                data_dir: dir.path().join(format!("node-{id}")),
                tick: Duration::from_millis(50),
                heartbeat_ticks: 1,
                election_ticks: 10,
                limits: limits.clone(),
                snapshot: Default::default(),
                unsafe_stale_reads: false,
                unsafe_watch_ignore_gaps: false,
                auto_compaction: AutoCompaction::Off,
                watch_progress_notify_interval: Duration::from_secs(600),
            });
            let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE_MAX);
            net.listeners
                .lock()
                .unwrap()
                .insert(endpoints[id as usize - 1].clone(), (id, accept_tx));
            let store = konsen_server::open_store(&settings).unwrap();
            let connector = MemConnector {
                net: Arc::clone(&net),
                from: id,
            };
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let task = tokio::spawn(konsen_server::run_node(
                settings,
                store,
                ReceiverStream::new(accept_rx),
                connector,
                async move {
                    let _ = stop_rx.await;
                },
            ));
            nodes.push((stop_tx, task));
        }
        MemCluster {
            net,
            _dir: dir,
            endpoints,
            nodes,
        }
    }

    fn channel(&self, id: u64) -> Channel {
        let connector = MemConnector {
            net: Arc::clone(&self.net),
            from: 0,
        };
        let timeouts = ChannelTimeouts {
            connect: Duration::from_millis(500),
            request: Some(Duration::from_secs(3)),
        };
        lazy_channel(&self.endpoints[id as usize - 1], connector, timeouts).unwrap()
    }

    /// Cuts `side` off from every other node.
    fn isolate(&self, side: u64, cut: bool) {
        for other in 1..=self.endpoints.len() as u64 {
            if other != side {
                self.net.set_cut(side, other, cut);
            }
        }
    }

    async fn leader_seen_by(&self, id: u64) -> (u64, u64) {
        match MaintenanceClient::new(self.channel(id))
            .status(StatusRequest {})
            .await
        {
            Ok(s) => {
                let s = s.into_inner();
                (s.leader, s.raft_term)
            }
            Err(_) => (0, 0),
        }
    }

    /// Waits until all of `among` agree on a leader among them.
    async fn wait_for_leader(&self, among: &[u64]) -> (u64, u64) {
        let started = Instant::now();
        loop {
            let mut seen = Vec::new();
            for &id in among {
                seen.push(self.leader_seen_by(id).await);
            }
            if seen.iter().all(|s| *s == seen[0]) && among.contains(&seen[0].0) {
                return seen[0];
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "no agreed leader among {among:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn put(&self, id: u64, key: &str, value: &str) -> Result<(), tonic::Status> {
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_owned().into_bytes().into(),
            ..Default::default()
        };
        KvClient::new(self.channel(id))
            .put(request)
            .await
            .map(|_| ())
    }

    async fn get(
        &self,
        id: u64,
        key: &str,
        serializable: bool,
    ) -> Result<Option<String>, tonic::Status> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
            ..Default::default()
        };
        let r = KvClient::new(self.channel(id))
            .range(request)
            .await?
            .into_inner();
        Ok(r.kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    async fn wait_for_value(&self, id: u64, key: &str, value: &str) {
        let started = Instant::now();
        loop {
            if self.get(id, key, true).await.ok().flatten().as_deref() == Some(value) {
                return;
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "node {id} never showed {key}={value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        for (stop, task) in self.nodes {
            let _ = stop.send(());
            task.await.unwrap().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_cannot_commit_and_the_majority_moves_on() {
    let cluster = MemCluster::start(3);
    let (old_leader, old_term) = cluster.wait_for_leader(&[1, 2, 3]).await;
    cluster.put(old_leader, "k", "before").await.unwrap();

    cluster.isolate(old_leader, true);
    let majority: Vec<u64> = (1..=3).filter(|&id| id != old_leader).collect();
    let (new_leader, new_term) = cluster.wait_for_leader(&majority).await;
    assert!(new_term > old_term && new_leader != old_leader);

    // The majority takes writes; the isolated node takes none.
    cluster.put(majority[0], "k", "majority").await.unwrap();
    let isolated = cluster.put(old_leader, "k", "minority").await;
    assert!(
        isolated.is_err(),
        "the isolated node acknowledged a write: {isolated:?}"
    );
    assert!(
        cluster.get(old_leader, "k", false).await.is_err(),
        "isolated linearizable read succeeded"
    );

    // Healed: the old leader follows the new one and converges.
    cluster.isolate(old_leader, false);
    cluster.wait_for_value(old_leader, "k", "majority").await;
    let (leader, _) = cluster.wait_for_leader(&[1, 2, 3]).await;
    assert_ne!(leader, 0);
    assert_eq!(
        cluster
            .get(old_leader, "k", false)
            .await
            .unwrap()
            .as_deref(),
        Some("majority")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_follower_does_not_disturb_the_leader() {
    let cluster = MemCluster::start(3);
    let (leader, term) = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.isolate(follower, true);
    // Long enough for the follower's election timer to fire many times;
    // pre-vote keeps it from raising its term.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.put(leader, "k", "v").await.unwrap();
    cluster.isolate(follower, false);
    cluster.wait_for_value(follower, "k", "v").await;
    assert_eq!(cluster.wait_for_leader(&[1, 2, 3]).await, (leader, term));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_the_concurrency_limit_are_refused_not_queued() {
    let cluster = MemCluster::start_with(
        1,
        Limits {
            concurrent_requests_max: 1,
            ..Limits::default()
        },
    );
    cluster.wait_for_leader(&[1]).await;
    let puts = (0..50).map(|i| {
        let mut kv = KvClient::new(cluster.channel(1));
        async move {
            let request = PutRequest {
                key: format!("k{i}").into_bytes(),
                value: vec![b'v'; 64].into(),
                ..Default::default()
            };
            kv.put(request).await
        }
    });
    let results = futures_join_all(puts).await;
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(results.iter().any(Result::is_ok), "no put got through");
    assert!(
        !refused.is_empty(),
        "50 concurrent puts never hit concurrent_requests_max=1"
    );
    for status in refused {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("too many requests"), "{status:?}");
    }
    cluster.stop().await;
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
