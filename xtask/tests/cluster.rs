//! The folders `cargo xtask dist` makes form a working cluster: three
//! nodes started with their `bootstrap.sh` (which runs
//! `konsen-server --config konsen.yml --node-id N --data-dir ./data`) elect
//! a leader, and a `konsen-cli set` is read back with `konsen-cli get`.
//!
//! This runs the real binaries: `xtask dist` builds them
//! (`cargo build --release --workspace`, in the caller's target dir), or
//! takes them from `XTASK_TEST_BIN_DIR` when that is set (not `KONSEN_*`:
//! the server reads every `KONSEN_*` variable as a setting). Only 127.0.0.1,
//! bounded waits, and every node is killed when the test ends.

mod support;

use std::fs;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::{KillOnDrop, assert_success, free_endpoints, write_cluster_file, xtask};

/// How long the cluster gets to elect a leader.
const ELECTION_WAIT: Duration = Duration::from_secs(30);
/// How long a node gets to say it is ready.
const READY_WAIT: Duration = Duration::from_secs(20);
/// How long one client command may take.
const CLI_DEADLINE: &str = "3s";

/// The running nodes of one test, and where their logs go.
struct Cluster {
    nodes: Vec<KillOnDrop>,
    logs: Vec<PathBuf>,
    cli: PathBuf,
    endpoints: String,
}

impl Cluster {
    fn start(out: &Path, n: usize, endpoints: &[String]) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            logs: Vec::new(),
            cli: out.join("node_0/konsen-cli"),
            endpoints: endpoints.join(","),
        };
        for i in 0..n {
            let dir = out.join(format!("node_{i}"));
            let log = out.join(format!("node_{i}.log"));
            let file = fs::File::create(&log).unwrap();
            let child = Command::new(dir.join("bootstrap.sh"))
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("starting bootstrap.sh");
            cluster.nodes.push(KillOnDrop(child));
            cluster.logs.push(log);
        }
        cluster
    }

    /// Runs konsen-cli against every node.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.cli)
            .args(["--endpoints", &self.endpoints, "--deadline", CLI_DEADLINE])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running konsen-cli")
    }

    /// The first node that has exited, if one has.
    fn exited(&mut self) -> Option<String> {
        self.nodes.iter_mut().enumerate().find_map(|(i, node)| {
            node.0
                .try_wait()
                .ok()
                .flatten()
                .map(|status| format!("node {} exited: {status}", i + 1))
        })
    }

    /// Panics with `what`, the last client output and every node's log.
    fn fail(&mut self, what: &str, output: &Output) -> ! {
        for node in &mut self.nodes {
            if let Ok(Some(status)) = node.0.try_wait() {
                eprintln!("node (pid {}) exited: {status}", node.0.id());
            }
        }
        for log in &self.logs {
            let text = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- {} (last 40 lines)", log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        panic!(
            "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Runs `xtask dist` for a cluster of `endpoints` into `dir/output`.
fn dist(dir: &Path, endpoints: &[String]) -> PathBuf {
    let config = write_cluster_file(dir, endpoints);
    let out = dir.join("output");
    let mut args = vec![
        "dist".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    if let Ok(bin_dir) = std::env::var("XTASK_TEST_BIN_DIR") {
        args.extend(["--bin-dir".into(), bin_dir]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_success(&xtask(&args), "xtask dist");
    out
}

#[test]
fn dist_folders_form_a_working_cluster() {
    let tmp = tempfile::Builder::new()
        .prefix("konsen-dist-cluster-")
        .tempdir()
        .unwrap();
    let endpoints = free_endpoints(3);
    let out = dist(tmp.path(), &endpoints);

    let mut cluster = Cluster::start(&out, endpoints.len(), &endpoints);

    let started = Instant::now();
    loop {
        let leader = cluster.cli(&["leader"]);
        if leader.status.success() {
            eprintln!(
                "leader after {:?}: {}",
                started.elapsed(),
                String::from_utf8_lossy(&leader.stdout).trim()
            );
            break;
        }
        if let Some(exited) = cluster.exited() {
            cluster.fail(&format!("waiting for a leader, {exited}"), &leader);
        }
        if started.elapsed() > ELECTION_WAIT {
            cluster.fail(&format!("no leader within {ELECTION_WAIT:?}"), &leader);
        }
        sleep(Duration::from_millis(300));
    }

    let set = cluster.cli(&["set", "dist-test-key", "dist-test-value"]);
    if !set.status.success() {
        cluster.fail("konsen-cli set", &set);
    }
    let get = cluster.cli(&["get", "dist-test-key"]);
    if !get.status.success() || !String::from_utf8_lossy(&get.stdout).contains("dist-test-value") {
        cluster.fail("konsen-cli get did not return the value set", &get);
    }
    let status = cluster.cli(&["status"]);
    if !status.status.success() {
        cluster.fail("konsen-cli status", &status);
    }
}

/// The readiness signal the systemd unit waits for (`Type=notify`): with
/// `NOTIFY_SOCKET` set, the node sends `READY=1` once it listens.
#[test]
fn node_tells_systemd_it_is_ready() {
    let tmp = tempfile::Builder::new()
        .prefix("konsen-dist-notify-")
        .tempdir()
        .unwrap();
    let endpoints = free_endpoints(1);
    let out = dist(tmp.path(), &endpoints);
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(READY_WAIT)).unwrap();
    let log = tmp.path().join("node.log");
    let file = fs::File::create(&log).unwrap();
    let _node = KillOnDrop(
        Command::new(out.join("node_0/bootstrap.sh"))
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting bootstrap.sh"),
    );
    let mut message = [0u8; 256];
    let received = socket.recv(&mut message);
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    let len = received.unwrap_or_else(|e| {
        panic!("no notification within {READY_WAIT:?} ({e}); node log:\n{log_text}")
    });
    let message = String::from_utf8_lossy(&message[..len]);
    assert!(
        message.lines().any(|l| l == "READY=1"),
        "got {message:?}, not READY=1"
    );
    TcpStream::connect(&endpoints[0]).expect("a node that said READY=1 accepts connections");
}
