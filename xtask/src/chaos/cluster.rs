//! The cluster under test: one `konsen-server` process per node on
//! 127.0.0.1 (free ports, data and logs in one run directory), the signals
//! the fault schedule sends them, and what the runner asks of them through
//! the etcd Maintenance API (who leads, has everyone caught up).
//!
//! Every process is killed and reaped when the [`Cluster`] is dropped, so a
//! failing or panicking run leaves nothing behind. Logs are appended to
//! `node-N.log` across restarts, so a failure can be read end to end.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use konsen_rpc::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use konsen_rpc::etcd::etcdserverpb::{StatusRequest, StatusResponse};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::proxy::{Links, Shaping};

/// How long a status query may take before the node counts as not
/// answering.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a SIGTERMed node gets to exit before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one node is doing, as far as the suite made it so.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum NodeState {
    Running,
    /// SIGSTOPped; SIGCONT resumes it.
    Paused,
    /// Killed or stopped; `start` brings it back on the same data dir.
    Down,
}

#[derive(Debug)]
struct Node {
    child: Option<Child>,
    state: NodeState,
}

/// The cluster id of every chaos cluster. Explicit because with proxies
/// each node's file lists different peer addresses, and the derived id
/// would differ.
const CLUSTER_ID: u64 = 0x0063_6861_6f73; // "chaos"

/// The nodes of one run.
#[derive(Debug)]
pub struct Cluster {
    server: PathBuf,
    pub dir: PathBuf,
    /// The cluster file of node i + 1.
    configs: Vec<PathBuf>,
    /// The peer-link proxies, when the run partitions the network.
    links: Option<Links>,
    /// `127.0.0.1:port` of node i + 1.
    pub endpoints: Vec<String>,
    channels: Vec<Channel>,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Writes cluster files for `n` nodes into `dir` (created) with free
    /// ports and the YAML lines `settings` (e.g. `tick_ms: 20`), and starts
    /// every node. With `partitions`, peers reach each other through
    /// proxies that [`Cluster::isolate`] cuts.
    pub async fn start(
        server: &Path,
        dir: &Path,
        n: usize,
        settings: &str,
        partitions: bool,
    ) -> Result<Cluster> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let endpoints = free_endpoints(n)?;
        let links = match partitions {
            true => Some(Links::start(&endpoints).await?),
            false => None,
        };
        let mut configs = Vec::new();
        for me in 1..=n as u64 {
            let mut text = String::from("# Made by cargo xtask chaos.\nendpoints:\n");
            for (i, e) in endpoints.iter().enumerate() {
                let peer = i as u64 + 1;
                let e = match &links {
                    Some(links) if peer != me => links.addr(me, peer),
                    _ => e.as_str(),
                };
                text.push_str(&format!("  - {e}\n"));
            }
            text.push_str(&format!("cluster_id: {CLUSTER_ID}\n"));
            text.push_str(settings);
            let config = dir.join(format!("cluster-{me}.yml"));
            fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
            configs.push(config);
        }
        let channels = endpoints
            .iter()
            .map(|e| channel(e))
            .collect::<Result<Vec<_>>>()?;
        let mut cluster = Cluster {
            server: server.to_path_buf(),
            dir: dir.to_path_buf(),
            configs,
            links,
            endpoints,
            channels,
            nodes: (0..n)
                .map(|_| Node {
                    child: None,
                    state: NodeState::Down,
                })
                .collect(),
        };
        for id in cluster.ids() {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// Node ids, from 1.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    /// A lazily connected channel to node `id` (shared by clients).
    pub fn channel(&self, id: u64) -> Channel {
        self.channels[index(id)].clone()
    }

    pub fn state(&self, id: u64) -> NodeState {
        self.nodes[index(id)].state
    }

    /// Starts node `id` (which must be down) on its data dir.
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let node = &mut self.nodes[index(id)];
        if node.state != NodeState::Down {
            bail!("node {id} is already running");
        }
        let log_path = self.dir.join(format!("node-{id}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&self.server)
            .arg("--config")
            .arg(&self.configs[index(id)])
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("running {}", self.server.display()))?;
        node.child = Some(child);
        node.state = NodeState::Running;
        Ok(())
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill_node(&mut self, id: u64) -> Result<()> {
        let node = &mut self.nodes[index(id)];
        if let Some(mut child) = node.child.take() {
            child.kill().with_context(|| format!("killing node {id}"))?;
            child.wait().with_context(|| format!("reaping node {id}"))?;
        }
        node.state = NodeState::Down;
        Ok(())
    }

    /// SIGTERMs node `id` and waits for it to exit (SIGKILL after a grace
    /// period). Returns whether it exited on its own.
    pub async fn terminate_node(&mut self, id: u64) -> Result<bool> {
        let node = &mut self.nodes[index(id)];
        let Some(mut child) = node.child.take() else {
            node.state = NodeState::Down;
            return Ok(true);
        };
        if node.state == NodeState::Paused {
            signal(&child, Signal::SIGCONT)?;
        }
        signal(&child, Signal::SIGTERM)?;
        let deadline = Instant::now() + STOP_GRACE;
        let clean = loop {
            if child.try_wait().context("waiting for a node")?.is_some() {
                break true;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        node.state = NodeState::Down;
        Ok(clean)
    }

    /// SIGSTOPs node `id`.
    pub fn pause_node(&mut self, id: u64) -> Result<()> {
        let node = &mut self.nodes[index(id)];
        if let (Some(child), NodeState::Running) = (&node.child, node.state) {
            signal(child, Signal::SIGSTOP)?;
            node.state = NodeState::Paused;
        }
        Ok(())
    }

    /// SIGCONTs node `id`.
    pub fn resume_node(&mut self, id: u64) -> Result<()> {
        let node = &mut self.nodes[index(id)];
        if let (Some(child), NodeState::Paused) = (&node.child, node.state) {
            signal(child, Signal::SIGCONT)?;
            node.state = NodeState::Running;
        }
        Ok(())
    }

    /// Cuts node `id` off from every other node (clients still reach it).
    pub fn isolate(&self, id: u64) -> Result<()> {
        let links = self
            .links
            .as_ref()
            .context("this cluster was started without partition proxies")?;
        links.isolate(id);
        Ok(())
    }

    /// Cuts the given directed links (`from -> to`).
    pub fn cut_links(&self, pairs: &[(u64, u64)]) -> Result<()> {
        let links = self
            .links
            .as_ref()
            .context("this cluster was started without partition proxies")?;
        links.cut(pairs);
        Ok(())
    }

    /// Makes the directed link `from -> to` slow and lossy.
    pub fn shape_link(&self, from: u64, to: u64, shaping: Shaping) -> Result<()> {
        let links = self
            .links
            .as_ref()
            .context("this cluster was started without partition proxies")?;
        links.shape(from, to, shaping);
        Ok(())
    }

    /// Heals every partition (and slow link). Returns whether there was one.
    pub fn heal_network(&self) -> bool {
        self.links.as_ref().is_some_and(Links::heal)
    }

    /// Heals the network, resumes every paused node and starts every dead
    /// one. Returns what it did, for the timeline.
    pub fn heal(&mut self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        if self.heal_network() {
            done.push("heal: network partition healed".to_string());
        }
        for id in self.ids() {
            match self.state(id) {
                NodeState::Paused => {
                    self.resume_node(id)?;
                    done.push(format!("heal: SIGCONT node {id}"));
                }
                NodeState::Down => {
                    self.start_node(id)?;
                    done.push(format!("heal: restart node {id}"));
                }
                NodeState::Running => {}
            }
        }
        Ok(done)
    }

    /// The first node found that has exited without the suite killing it.
    pub fn crashed(&mut self) -> Option<String> {
        self.nodes.iter_mut().enumerate().find_map(|(i, node)| {
            let child = node.child.as_mut()?;
            let status = child.try_wait().ok().flatten()?;
            Some(format!("node {} exited on its own: {status}", i + 1))
        })
    }

    /// Node `id`'s Maintenance.Status, or `None` if it does not answer in
    /// time.
    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let mut client = MaintenanceClient::new(self.channel(id));
        match tokio::time::timeout(STATUS_TIMEOUT, client.status(StatusRequest {})).await {
            Ok(Ok(response)) => Some(response.into_inner()),
            _ => None,
        }
    }

    /// What every node says about leader and term, for the timeline.
    pub async fn views(&self) -> String {
        let mut views = Vec::new();
        for id in self.ids() {
            let view = match (self.state(id), self.status(id).await) {
                (NodeState::Running, Some(s)) => {
                    format!("leader {} term {}", s.leader, s.raft_term)
                }
                (NodeState::Running, None) => "no answer".to_string(),
                (state, _) => format!("{state:?}"),
            };
            views.push(format!("node {id}: {view}"));
        }
        views.join("; ")
    }

    /// The node that says it leads (its status names itself as leader),
    /// among the running nodes.
    pub async fn leader(&self) -> Option<u64> {
        for id in self.ids() {
            if self.state(id) != NodeState::Running {
                continue;
            }
            if let Some(s) = self.status(id).await {
                let me = s.header.as_ref().map(|h| h.member_id);
                if s.leader != 0 && Some(s.leader) == me {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Waits up to `bound` for a leader. Returns it.
    pub async fn wait_for_leader(&self, bound: Duration) -> Result<u64> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!("no leader within {bound:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until node `id` answers Status and knows a leader.
    pub async fn wait_serving(&self, id: u64, bound: Duration) -> Result<()> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(s) = self.status(id).await
                && s.leader != 0
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node {id} does not serve (answer Status with a leader) within {bound:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits up to `bound` until a leader exists and every node has
    /// applied the leader's commit index. Returns how long it took.
    pub async fn wait_recovered(&self, bound: Duration) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + bound;
        loop {
            let why = match self.recovered().await {
                Ok(()) => return Ok(started.elapsed()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                bail!("cluster not recovered within {bound:?}: {why}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn recovered(&self) -> Result<(), String> {
        let Some(leader) = self.leader().await else {
            return Err("no leader".into());
        };
        let commit = self
            .status(leader)
            .await
            .ok_or_else(|| format!("leader {leader} does not answer"))?
            .raft_index;
        for id in self.ids() {
            let s = self
                .status(id)
                .await
                .ok_or_else(|| format!("node {id} does not answer"))?;
            if s.raft_applied_index < commit {
                return Err(format!(
                    "node {id} applied {} < leader {leader}'s commit index {commit}",
                    s.raft_applied_index
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn index(id: u64) -> usize {
    usize::try_from(id - 1).expect("node ids are small")
}

fn signal(child: &Child, signal: Signal) -> Result<()> {
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    kill(Pid::from_raw(pid), signal).with_context(|| format!("sending {signal} to pid {pid}"))
}

/// A channel that connects on first use and reconnects after the node
/// restarts.
fn channel(endpoint: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{endpoint}"))
        .with_context(|| format!("endpoint {endpoint}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// `n` endpoints on 127.0.0.1 on ports that were free a moment ago (out of
/// the ephemeral range: see `unused_local_ports`).
fn free_endpoints(n: usize) -> Result<Vec<String>> {
    Ok(konsen_rpc::net::unused_local_ports(n)
        .context("finding free ports")?
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect())
}
