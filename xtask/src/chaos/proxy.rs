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

use std::collections::HashMap;

use anyhow::{Context, Result};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The proxies of every directed link between the nodes of one cluster.
#[derive(Debug)]
pub struct Links {
    /// (from, to) → the proxy's address and its cut switch.
    links: HashMap<(u64, u64), (String, watch::Sender<bool>)>,
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
                let (cut, cut_rx) = watch::channel(false);
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
                cut.send_replace(true);
            }
        }
    }

    /// Cuts the links `from -> to` for every given pair (one direction
    /// each: `to` still reaches `from` unless that pair is given too).
    pub fn cut(&self, pairs: &[(u64, u64)]) {
        for pair in pairs {
            if let Some((_, cut)) = self.links.get(pair) {
                cut.send_replace(true);
            }
        }
    }

    /// Heals every cut link. Returns whether any was cut.
    pub fn heal(&self) -> bool {
        let mut any = false;
        for (_, cut) in self.links.values() {
            any |= cut.send_replace(false);
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
async fn serve(listener: TcpListener, target: String, cut: watch::Receiver<bool>) {
    while let Ok((conn, _)) = listener.accept().await {
        tokio::spawn(relay(conn, target.clone(), cut.clone()));
    }
}

/// One connection: relayed until the link is cut, then held silent until it
/// heals, then closed.
async fn relay(mut conn: TcpStream, target: String, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow() {
        let Ok(mut upstream) = TcpStream::connect(&target).await else {
            return;
        };
        let _ = upstream.set_nodelay(true);
        let _ = conn.set_nodelay(true);
        tokio::select! {
            _ = copy_bidirectional(&mut conn, &mut upstream) => return,
            changed = cut.wait_for(|c| *c) => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
    // Cut: hold the connection without a byte either way until healed (or
    // the proxies are gone).
    let _ = cut.wait_for(|c| !*c).await;
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
}
