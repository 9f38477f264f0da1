//! `cargo xtask local`: a whole cluster on this machine, for trying konsen.
//!
//! Builds the release binaries, writes a cluster file for N nodes on
//! 127.0.0.1 (ports `base_port`, `base_port + 1`, ...) into
//! `<target dir>/konsen-local/`, starts one `konsen-server` per node, and
//! prints every node's log line prefixed with the node (`[node-1] ...`).
//! Each run starts from empty data directories.
//!
//! Ctrl-C (or SIGTERM, SIGHUP) stops every node: SIGTERM first, SIGKILL for
//! any node still running after a grace period. A node that dies on its own
//! is reported and the others keep running, so killing one by hand shows
//! the cluster riding it out. The nodes are killed if xtask panics; only a
//! SIGKILL of xtask itself can leave them running.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use crate::cargo::{self, Binaries};
use crate::cluster_file::ClusterFile;

/// Nodes `local` will start at most: more is a typo, not a test.
const NODES_MAX: usize = 9;
/// How long stopped nodes get to exit before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often node exits are checked for.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What `cargo xtask local` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub base_port: u16,
    /// Take the binaries from here instead of building them.
    pub bin_dir: Option<PathBuf>,
    /// Where configs and data go; default `<target dir>/konsen-local`.
    pub dir: Option<PathBuf>,
}

/// Runs the cluster until Ctrl-C.
pub fn run(options: &Options) -> Result<()> {
    ensure!(
        (1..=NODES_MAX).contains(&options.nodes),
        "--nodes {}: must be from 1 to {NODES_MAX}",
        options.nodes
    );
    let last_port = u32::from(options.base_port) + options.nodes as u32 - 1;
    ensure!(
        options.base_port >= 1024 && last_port <= u32::from(u16::MAX),
        "--base-port {}: the nodes need ports {}..={last_port}, which must lie in 1024..=65535",
        options.base_port,
        options.base_port
    );
    let endpoints: Vec<String> = (0..options.nodes)
        .map(|i| format!("127.0.0.1:{}", options.base_port as usize + i))
        .collect();
    for endpoint in &endpoints {
        TcpListener::bind(endpoint).with_context(|| {
            format!("port of {endpoint} is taken (another `cargo xtask local`?); try --base-port")
        })?;
    }

    let binaries = Binaries::prebuilt_or_build(options.bin_dir.as_deref())?;
    let dir = match &options.dir {
        Some(d) => d.clone(),
        None => cargo::target_dir()?.join("konsen-local"),
    };
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("cluster.yml");
    let text = ClusterFile::render(&endpoints);
    ClusterFile::parse(&config, &text).expect("local invariant: a made-up cluster file is valid");
    fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(supervise(&binaries, &dir, &config, &endpoints))
}

/// A started node and the tasks copying its output.
#[derive(Debug)]
struct Running {
    name: String,
    child: Child,
    exited: Option<ExitStatus>,
    output: Vec<JoinHandle<()>>,
}

async fn supervise(
    binaries: &Binaries,
    dir: &Path,
    config: &Path,
    endpoints: &[String],
) -> Result<()> {
    // Installed before any node starts, so a Ctrl-C never finds xtask
    // without a handler (which would kill it and orphan the nodes).
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    let mut nodes = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let id = i + 1;
        let data_dir = dir.join(format!("node-{id}"));
        let started = start_node(binaries, config, id, &data_dir);
        match started {
            Ok(node) => nodes.push(node),
            Err(e) => {
                stop_all(&mut nodes).await;
                return Err(e.context(format!("starting node {id} ({endpoint})")));
            }
        }
    }
    print_banner(binaries, dir, endpoints);

    let reason = loop {
        tokio::select! {
            _ = interrupt.recv() => break "Ctrl-C",
            _ = terminate.recv() => break "SIGTERM",
            _ = hangup.recv() => break "SIGHUP",
            _ = tokio::time::sleep(POLL_INTERVAL) => {
                for node in nodes.iter_mut().filter(|n| n.exited.is_none()) {
                    if let Some(status) = node.child.try_wait().context("checking a node")? {
                        println!("[xtask] {} exited: {status}", node.name);
                        node.exited = Some(status);
                    }
                }
                if nodes.iter().all(|n| n.exited.is_some()) {
                    bail!("every node has exited");
                }
            }
        }
    };
    println!("[xtask] {reason}: stopping every node");
    stop_all(&mut nodes).await;
    println!(
        "[xtask] all nodes stopped; their data stays in {} until the next run",
        dir.display()
    );
    Ok(())
}

fn start_node(binaries: &Binaries, config: &Path, id: usize, data_dir: &Path) -> Result<Running> {
    let mut child = Command::new(&binaries.server)
        .arg("--config")
        .arg(config)
        .arg("--node-id")
        .arg(id.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", binaries.server.display()))?;
    let name = format!("node-{id}");
    let prefix = format!("[{name}] ");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let output = vec![
        tokio::spawn(copy_lines(stdout, prefix.clone())),
        tokio::spawn(copy_lines(stderr, prefix)),
    ];
    Ok(Running {
        name,
        child,
        exited: None,
        output,
    })
}

/// Prints every line of `from` to stdout behind `prefix`.
async fn copy_lines(from: impl AsyncRead + Unpin, prefix: String) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{prefix}{line}");
    }
}

/// SIGTERM to every running node, SIGKILL to those still running after
/// [`STOP_GRACE`]; returns once every node has exited.
async fn stop_all(nodes: &mut [Running]) {
    for node in nodes.iter_mut().filter(|n| n.exited.is_none()) {
        if let Some(pid) = node.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for node in nodes.iter_mut().filter(|n| n.exited.is_none()) {
        let status = match tokio::time::timeout_at(deadline, node.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                println!(
                    "[xtask] {} still running after {STOP_GRACE:?}: killing it",
                    node.name
                );
                let _ = node.child.start_kill();
                node.child.wait().await
            }
        };
        match status {
            Ok(status) => {
                println!("[xtask] {} stopped: {status}", node.name);
                node.exited = Some(status);
            }
            Err(e) => println!("[xtask] {}: cannot wait for it: {e}", node.name),
        }
    }
    for node in nodes.iter_mut() {
        for task in node.output.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
    }
}

fn print_banner(binaries: &Binaries, dir: &Path, endpoints: &[String]) {
    let list = endpoints.join(",");
    let cli = binaries.cli.display();
    println!(
        "[xtask] konsen cluster of {} nodes, files in {}",
        endpoints.len(),
        dir.display()
    );
    for (i, endpoint) in endpoints.iter().enumerate() {
        println!(
            "[xtask]   node-{} listens on {endpoint} (peers and etcd clients)",
            i + 1
        );
    }
    println!("[xtask] try, from another terminal:");
    println!("    {cli} --endpoints {list} status");
    println!("    {cli} --endpoints {list} set greeting hello");
    println!("    {cli} --endpoints {list} get greeting");
    println!("    etcdctl --endpoints={list} endpoint status -w table");
    println!(
        "    etcdctl --endpoints={list} put greeting hi && etcdctl --endpoints={list} get greeting"
    );
    println!("[xtask] Ctrl-C stops every node.");
}
