//! A real konsen cluster for tests: `konsen-server` processes on 127.0.0.1
//! with free ports and temporary data dirs. Every wait is bounded, and the
//! processes are killed when the [`TestCluster`] is dropped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use konsen_rpc::etcd::etcdserverpb::{
    HashKvRequest, PutRequest, PutResponse, RangeRequest, StatusRequest, StatusResponse,
    kv_client::KvClient, maintenance_client::MaintenanceClient,
};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Whether tools that tests may skip without (konsen-cli, etcdctl) must
/// be there: under `.ci/run` (which sets `XTASK_TEST_BIN_DIR`) or any CI.
pub fn required_in_ci() -> bool {
    std::env::var_os("XTASK_TEST_BIN_DIR").is_some() || std::env::var_os("CI").is_some()
}

/// Fast elections keep the tests short: 0.5 to 1 s without a leader.
pub const FAST_ELECTIONS: &str = "tick_ms: 50\nheartbeat_ticks: 1\nelection_ticks: 10\n";

/// How long a test waits for a leader, a catch-up, a process to exit.
pub const WAIT_MAX: Duration = Duration::from_secs(20);
/// The per-request timeout clients use in tests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub endpoints: Vec<String>,
    pub config: PathBuf,
    children: Vec<Option<Child>>,
}

/// Ports free right now, out of the ephemeral range (`unused_local_ports`).
fn free_ports(n: usize) -> Vec<u16> {
    konsen_rpc::net::unused_local_ports(n).expect("free ports")
}

impl TestCluster {
    /// Writes a cluster file for `n` nodes and starts all of them.
    pub fn start(n: usize) -> TestCluster {
        Self::start_with(n, FAST_ELECTIONS)
    }

    /// Writes the cluster file without starting anything.
    pub fn configure(n: usize) -> TestCluster {
        Self::configure_with(n, FAST_ELECTIONS)
    }

    /// Like [`TestCluster::start`], with `settings` (YAML: timing and any
    /// other setting but the endpoints and limits) in the cluster file.
    pub fn start_with(n: usize, settings: &str) -> TestCluster {
        let mut cluster = Self::configure_with(n, settings);
        for id in 1..=n as u64 {
            cluster.spawn(id);
        }
        cluster
    }

    fn configure_with(n: usize, settings: &str) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let endpoints: Vec<String> = free_ports(n)
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut yaml = String::from("endpoints:\n");
        for e in &endpoints {
            yaml.push_str(&format!("  - {e}\n"));
        }
        yaml.push_str(settings);
        yaml.push_str("limits:\n  request_timeout_ms: 3000\n");
        let config = dir.path().join("cluster.yml");
        std::fs::write(&config, yaml).expect("write cluster file");
        TestCluster {
            dir,
            endpoints,
            config,
            children: (0..n).map(|_| None).collect(),
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        (1..=self.endpoints.len() as u64).collect()
    }

    /// Every node but `except`.
    pub fn others(&self, except: u64) -> Vec<u64> {
        self.ids().into_iter().filter(|&id| id != except).collect()
    }

    pub fn endpoint(&self, id: u64) -> &str {
        &self.endpoints[id as usize - 1]
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Starts node `id` (again).
    pub fn spawn(&mut self, id: u64) {
        assert!(
            self.children[id as usize - 1].is_none(),
            "node {id} is already running"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_konsen-server"))
            .arg("--config")
            .arg(&self.config)
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .env_remove("KONSEN_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start konsen-server");
        self.children[id as usize - 1] = Some(child);
    }

    /// SIGKILLs node `id`: no shutdown, no flush.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs node `id` and waits for it to exit.
    pub fn terminate(&mut self, id: u64) -> ExitStatus {
        let mut child = self.children[id as usize - 1]
            .take()
            .expect("node is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for node") {
                return status;
            }
            if started.elapsed() > WAIT_MAX {
                let _ = child.kill();
                panic!("node {id} did not exit within {WAIT_MAX:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's log so far, for failure messages.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    pub fn channel(&self, id: u64) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.endpoint(id)))
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .timeout(REQUEST_TIMEOUT)
            .connect_lazy()
    }

    pub fn kv(&self, id: u64) -> KvClient<Channel> {
        KvClient::new(self.channel(id))
    }

    pub async fn status(&self, id: u64) -> Result<StatusResponse, Status> {
        Ok(MaintenanceClient::new(self.channel(id))
            .status(StatusRequest {})
            .await?
            .into_inner())
    }

    /// Waits until every node in `among` reports the same leader, itself
    /// one of `among`, and returns it.
    pub async fn wait_for_leader(&self, among: &[u64]) -> u64 {
        let started = Instant::now();
        loop {
            let mut leaders = Vec::new();
            for &id in among {
                if let Ok(s) = self.status(id).await {
                    leaders.push(s.leader);
                }
            }
            if leaders.len() == among.len()
                && leaders.iter().all(|&l| l == leaders[0])
                && among.contains(&leaders[0])
            {
                return leaders[0];
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "no agreed leader among {among:?} within {WAIT_MAX:?} (saw {leaders:?})\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.ids()
            .iter()
            .map(|&id| format!("--- node {id}\n{}", self.log(id)))
            .collect()
    }

    pub async fn put(&self, id: u64, key: &str, value: &str) -> Result<PutResponse, Status> {
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_owned().into_bytes().into(),
            ..Default::default()
        };
        Ok(self.kv(id).put(request).await?.into_inner())
    }

    /// Puts through node `id`, retrying while the cluster settles (no
    /// leader yet, leader changed), until it succeeds or the wait ends.
    pub async fn put_retrying(&self, id: u64, key: &str, value: &str) -> PutResponse {
        let started = Instant::now();
        loop {
            match self.put(id, key, value).await {
                Ok(r) => return r,
                Err(e) if started.elapsed() < WAIT_MAX => {
                    eprintln!("put {key} via node {id}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("put {key} via node {id} kept failing: {e}\n{}", self.logs()),
            }
        }
    }

    pub async fn get(
        &self,
        id: u64,
        key: &str,
        serializable: bool,
    ) -> Result<Option<String>, Status> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
            ..Default::default()
        };
        let response = self.kv(id).range(request).await?.into_inner();
        Ok(response
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Node `id`'s `HashKV` answer: (revision, hash).
    pub async fn hash_kv(&self, id: u64) -> Result<(i64, u32), Status> {
        let response = MaintenanceClient::new(self.channel(id))
            .hash_kv(HashKvRequest { revision: 0 })
            .await?
            .into_inner();
        Ok((response.header.map_or(0, |h| h.revision), response.hash))
    }

    /// Waits until every node in `among` reports the same revision and the
    /// same hash of its whole key-value state, and returns them.
    pub async fn wait_for_same_state(&self, among: &[u64]) -> (i64, u32) {
        let started = Instant::now();
        loop {
            let mut seen = Vec::new();
            for &id in among {
                seen.push(self.hash_kv(id).await.ok());
            }
            if seen.iter().all(|s| s.is_some() && *s == seen[0]) {
                return seen[0].expect("checked above");
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "nodes {among:?} do not agree on their state within {WAIT_MAX:?}: {seen:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a read through `id` returns `expected`.
    pub async fn wait_for_value(&self, id: u64, key: &str, expected: &str, serializable: bool) {
        let started = Instant::now();
        loop {
            let got = self.get(id, key, serializable).await;
            if got.as_ref().is_ok_and(|v| v.as_deref() == Some(expected)) {
                return;
            }
            assert!(
                started.elapsed() < WAIT_MAX,
                "node {id} did not return {key}={expected} within {WAIT_MAX:?}: last {got:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
