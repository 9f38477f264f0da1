//! Throughput of the Raft core alone: a 3-node cluster in one process,
//! in-memory logs, messages handed over directly, proposals batched.
//! Prints committed entries per second. Run with `cargo xtask bench core`
//! (or `cargo bench -p konsen-core --bench core`).
//!
//! Options (environment): `KONSEN_BENCH_SECS` (default 3),
//! `KONSEN_BENCH_BATCH` proposals per round (default 1024),
//! `KONSEN_BENCH_VALUE_BYTES` (default 16).

use std::time::{Duration, Instant};

use bytes::Bytes;
use konsen_core::storage::{MemStorage, Storage};
use konsen_core::{Config, Membership, Message, RawNode, RestoredState, Role};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Cluster {
    nodes: Vec<(RawNode, MemStorage)>,
    inbox: Vec<Message>,
    applied: u64,
}

impl Cluster {
    fn new(n: u64) -> Self {
        let nodes = (1..=n)
            .map(|id| {
                let mut config = Config::new(id);
                config.inflight_msgs_max = 256;
                let restored = RestoredState {
                    membership: Membership::with_voters(1..=n),
                    ..Default::default()
                };
                (
                    RawNode::new(config, restored).expect("valid config"),
                    MemStorage::new(),
                )
            })
            .collect();
        Cluster {
            nodes,
            inbox: Vec::new(),
            applied: 0,
        }
    }

    /// Handles every Ready and delivers every message until quiet.
    fn stabilize(&mut self) {
        loop {
            let mut moved = false;
            for (i, (raw, disk)) in self.nodes.iter_mut().enumerate() {
                while raw.has_ready() {
                    moved = true;
                    let ready = raw.ready();
                    disk.append(ready.hard_state, &ready.entries)
                        .expect("memory append");
                    if i == 0 {
                        self.applied += ready.committed_entries.len() as u64;
                    }
                    self.inbox.extend(ready.messages);
                    raw.advance();
                }
            }
            for m in std::mem::take(&mut self.inbox) {
                moved = true;
                let to = (m.to - 1) as usize;
                self.nodes[to].0.step(m).expect("valid message");
            }
            if !moved {
                return;
            }
        }
    }
}

fn main() {
    let secs = env_or("KONSEN_BENCH_SECS", 3);
    let batch = env_or("KONSEN_BENCH_BATCH", 1024);
    let value_bytes = env_or("KONSEN_BENCH_VALUE_BYTES", 16) as usize;
    let mut cluster = Cluster::new(3);
    cluster.nodes[0].0.campaign();
    cluster.stabilize();
    assert_eq!(cluster.nodes[0].0.role(), Role::Leader, "node 1 leads");
    let value = Bytes::from(vec![b'v'; value_bytes]);
    let start_applied = cluster.applied;
    let started = Instant::now();
    let deadline = Duration::from_secs(secs);
    let mut rounds = 0u64;
    while started.elapsed() < deadline {
        for _ in 0..batch {
            cluster.nodes[0]
                .0
                .propose(value.clone())
                .expect("leader accepts");
        }
        cluster.stabilize();
        rounds += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let committed = cluster.applied - start_applied;
    println!(
        "core: 3 nodes, batch {batch}, {value_bytes}-byte values: {committed} entries committed in {elapsed:.2} s \
         ({rounds} rounds) = {:.0} entries/s",
        committed as f64 / elapsed
    );
}
