//! Network partitions: one small TCP proxy per directed peer link, which
//! the partition scenarios cut and heal.
//!
//! Each node gets its own cluster file in which its peers' endpoints are
//! the proxies of its outgoing links (its own entry stays its real
//! endpoint, where it listens), so every byte a node sends a peer (Raft
//! messages and forwarded writes) passes a proxy. Clients and the runner
//! still talk to the nodes directly: a partition separates nodes from
//! each other, not from their clients.
//!
//! A cut link is a black hole, not a refusal: open connections stop
//! carrying data and new ones are accepted but never answered, as when
//! packets are dropped. Healing closes the held connections so that the
//! nodes reconnect.
//!
//! A link can also be made slow and lossy ([`Shaping`]): each chunk of
//! bytes it carries waits a random delay, and with a given chance the
//! connection is dropped instead, losing whatever was in flight on it (TCP
//! never loses bytes inside a connection, so a lost message is a lost
//! connection).

use std::collections::HashMap;

use std::time::Duration;

use anyhow::{Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes relayed per read.
const CHUNK_BYTES_MAX: usize = 16 * 1024;

/// How a link that is not cut degrades what it carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shaping {
    /// Each chunk waits a delay drawn from `[0, delay_ms_max]`.
    pub delay_ms_max: u64,
    /// Chance, per thousand chunks, that the connection is dropped instead.
    pub drop_per_mille: u32,
}

/// One link's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LinkState {
    cut: bool,
    shaping: Shaping,
}

/// The proxies of every directed link between the nodes of one cluster.
#[derive(Debug)]
pub struct Links {
    /// (from, to) → the proxy's address and its state.
    links: HashMap<(u64, u64), (String, watch::Sender<LinkState>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Links {
    /// Starts a proxy for every ordered pair of nodes; node i + 1 listens
    /// on `endpoints[i]`.
    pub async fn start(endpoints: &[String]) -> Result<Links> {
        let mut links = HashMap::new();
        let mut tasks = Vec::new();
        for (i, _) in endpoints.iter().enumerate() {
            for (j, target) in endpoints.iter().enumerate() {
                if i == j {
                    continue;
                }
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .context("binding a proxy port")?;
                let addr = listener.local_addr().context("a bound port")?.to_string();
                let (cut, cut_rx) = watch::channel(LinkState::default());
                tasks.push(tokio::spawn(serve(listener, target.clone(), cut_rx)));
                links.insert((i as u64 + 1, j as u64 + 1), (addr, cut));
            }
        }
        Ok(Links { links, tasks })
    }

    /// The address node `from` dials to reach node `to`.
    pub fn addr(&self, from: u64, to: u64) -> &str {
        &self.links[&(from, to)].0
    }

    /// Cuts every link to and from node `id`.
    pub fn isolate(&self, id: u64) {
        for ((from, to), (_, cut)) in &self.links {
            if *from == id || *to == id {
                cut.send_modify(|s| s.cut = true);
            }
        }
    }

    /// Cuts the links `from -> to` for every given pair (one direction
    /// each: `to` still reaches `from` unless that pair is given too).
    pub fn cut(&self, pairs: &[(u64, u64)]) {
        for pair in pairs {
            if let Some((_, cut)) = self.links.get(pair) {
                cut.send_modify(|s| s.cut = true);
            }
        }
    }

    /// Makes the link `from -> to` slow and lossy as `shaping` says.
    pub fn shape(&self, from: u64, to: u64, shaping: Shaping) {
        if let Some((_, state)) = self.links.get(&(from, to)) {
            state.send_modify(|s| s.shaping = shaping);
        }
    }

    /// Heals every cut or shaped link. Returns whether any was.
    pub fn heal(&self) -> bool {
        let mut any = false;
        for (_, state) in self.links.values() {
            any |= state.send_replace(LinkState::default()) != LinkState::default();
        }
        any
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Connection tasks end when their switch's sender is gone.
    }
}

/// Accepts connections for one link and relays them to `target` while the
/// link is whole.
async fn serve(listener: TcpListener, target: String, cut: watch::Receiver<LinkState>) {
    while let Ok((conn, _)) = listener.accept().await {
        tokio::spawn(relay(conn, target.clone(), cut.clone()));
    }
}

/// One connection: relayed until the link is cut, then held silent until it
/// heals, then closed.
async fn relay(mut conn: TcpStream, target: String, mut cut: watch::Receiver<LinkState>) {
    // Connections are held open while cut (a black hole, not a refusal),
    // and closed when this returns.
    let mut upstream = None;
    if !cut.borrow().cut {
        let Ok(up) = TcpStream::connect(&target).await else {
            return;
        };
        let _ = up.set_nodelay(true);
        let _ = conn.set_nodelay(true);
        let up = upstream.insert(up);
        let (mut down_read, mut down_write) = conn.split();
        let (mut up_read, mut up_write) = up.split();
        let (there, back) = (cut.clone(), cut.clone());
        tokio::select! {
            () = pump(&mut down_read, &mut up_write, &there) => return,
            () = pump(&mut up_read, &mut down_write, &back) => return,
            changed = cut.wait_for(|s| s.cut) => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
    // Cut: hold the connection without a byte either way until healed (or
    // the proxies are gone).
    let _ = cut.wait_for(|s| !s.cut).await;
    drop(upstream);
}

/// Copies `from` to `to`, a chunk at a time, delaying or dropping as the
/// link's shaping says. Returns when either side closes or a drop happens.
async fn pump(
    from: &mut tokio::net::tcp::ReadHalf<'_>,
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    state: &watch::Receiver<LinkState>,
) {
    let mut buf = vec![0u8; CHUNK_BYTES_MAX];
    // Only the timing is random here; the seed of a run fixes the schedule.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut rng = SmallRng::seed_from_u64(u64::from(nanos));
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let shaping = state.borrow().shaping;
        let delay = rng.random_range(0..=shaping.delay_ms_max);
        let drop = rng.random_range(0..1000) < shaping.drop_per_mille;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if drop || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server standing in for node 2.
    async fn echo() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        if conn.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(conn: &mut TcpStream, byte: u8) -> Option<u8> {
        conn.write_all(&[byte]).await.ok()?;
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await {
            Ok(Ok(1)) => Some(buf[0]),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_cut_link_is_a_black_hole_until_healed() {
        let endpoints = vec!["127.0.0.1:1".to_string(), echo().await];
        let links = Links::start(&endpoints).await.unwrap();
        let mut conn = TcpStream::connect(links.addr(1, 2)).await.unwrap();
        assert_eq!(round_trip(&mut conn, b'a').await, Some(b'a'));

        links.isolate(2);
        assert_eq!(round_trip(&mut conn, b'b').await, None, "open connection");
        let mut fresh = TcpStream::connect(links.addr(1, 2)).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b'c').await, None, "new connection");

        assert!(links.heal());
        assert!(!links.heal(), "nothing left to heal");
        // Held connections are closed; a new one goes through.
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut again = TcpStream::connect(links.addr(1, 2)).await.unwrap();
        assert_eq!(round_trip(&mut again, b'd').await, Some(b'd'));
    }

    #[tokio::test]
    async fn a_lossy_link_drops_connections_until_healed() {
        let endpoints = vec!["127.0.0.1:1".to_string(), echo().await];
        let links = Links::start(&endpoints).await.unwrap();
        let every_chunk = Shaping {
            delay_ms_max: 20,
            drop_per_mille: 1000,
        };
        links.shape(1, 2, every_chunk);
        let mut conn = TcpStream::connect(links.addr(1, 2)).await.unwrap();
        assert_eq!(round_trip(&mut conn, b'a').await, None, "dropped");
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");

        assert!(links.heal());
        let mut fresh = TcpStream::connect(links.addr(1, 2)).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b'b').await, Some(b'b'));
    }
}
