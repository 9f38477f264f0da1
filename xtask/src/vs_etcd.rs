//! `cargo xtask bench vs-etcd`: the same load against a 3-node etcd cluster
//! and a 3-node konsen cluster on this machine, one cluster at a time, both
//! with fsync on and data on local disk, ports on 127.0.0.1 only. Prints one
//! table with the ratio konsen/etcd for every row, and the servers' memory
//! after the 1000-client row.
//!
//! On a small shared machine one run swings by 10-25 % per row. With
//! `--rounds N` the pair of clusters runs N times (fresh clusters each
//! round, etcd first in odd rounds and konsen first in even ones); the
//! table shows medians, and the ratio column is the median of the
//! per-round ratios, with their range beside it.
//!
//! With `--footprint PUTS` it measures memory and disk instead: PUTS puts
//! (100 clients) to 1,000 keys on each cluster, both with auto-compaction
//! keeping 10,000 revisions (konsen's default; etcd is given the same),
//! then each server's RSS and its data dir's size on disk.
//!
//! etcd is Debian's `etcd-server` package (installed with apt-get when
//! missing); the load generator is `konsen-bench`, which speaks the etcd v3
//! API to both.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cargo::{self, Binaries};

/// How long a cluster may take to answer its first write.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped server may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Options {
    pub duration_secs: u64,
    /// Times the pair of clusters runs, alternating (at least 1).
    pub rounds: usize,
    pub bin_dir: Option<PathBuf>,
    /// Measure memory and disk after this many puts instead of the rows.
    pub footprint_puts: Option<u64>,
}

/// One benchmark row: a workload and its client/connection counts.
struct Row {
    name: &'static str,
    clients: usize,
    conns: usize,
    workload: &'static [&'static str],
}

const ROWS: &[Row] = &[
    Row {
        name: "put, 1 client",
        clients: 1,
        conns: 1,
        workload: &["put"],
    },
    Row {
        name: "put, 100 clients",
        clients: 100,
        conns: 10,
        workload: &["put"],
    },
    Row {
        name: "put, 1000 clients / 100 conns",
        clients: 1000,
        conns: 100,
        workload: &["put"],
    },
    Row {
        name: "range linearizable, 100 clients",
        clients: 100,
        conns: 10,
        workload: &["range"],
    },
    Row {
        name: "range serializable, 100 clients",
        clients: 100,
        conns: 10,
        workload: &["range", "--serializable"],
    },
    Row {
        name: "txn-put, 100 clients",
        clients: 100,
        conns: 10,
        workload: &["txn-put"],
    },
    Row {
        name: "range 5000 revisions back, 100 clients",
        clients: 100,
        conns: 10,
        workload: &["range", "--rev-back", "5000"],
    },
    Row {
        name: "90 % range, 10 % txn-put, 100 clients",
        clients: 100,
        conns: 10,
        workload: &["mix", "--read-ratio", "0.9", "--txn"],
    },
];
/// The row after which server memory is read.
const RSS_AFTER_ROW: usize = 2;

/// What one row measured.
#[derive(Clone, Copy, Debug, Default)]
struct Measured {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// One round's rows: (etcd, konsen).
type Round = (Vec<Measured>, Vec<Measured>);

/// Processes that are stopped (SIGTERM, then SIGKILL) when dropped.
struct Cluster {
    name: &'static str,
    children: Vec<Child>,
    endpoints: Vec<String>,
    /// Where its data and logs are.
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for child in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        println!("[vs-etcd] {} cluster stopped", self.name);
    }
}

impl Cluster {
    /// Fails if a server this run started has exited: its ports may then
    /// be answered by something else (a cluster left running), whose
    /// numbers would be reported as this cluster's.
    fn check_running(&mut self) -> Result<()> {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} server {} exited ({status}); its log is in {}",
                    self.name,
                    i + 1,
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    /// Resident memory of each server, in MiB.
    fn rss_mib(&self) -> Vec<f64> {
        self.children
            .iter()
            .map(|c| {
                fs::read_to_string(format!("/proc/{}/status", c.id()))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|kb| kb.parse::<f64>().ok())
                    })
                    .map_or(0.0, |kb| kb / 1024.0)
            })
            .collect()
    }
}

pub fn run(options: &Options) -> Result<()> {
    let binaries = Binaries::prebuilt_or_build(options.bin_dir.as_deref())?;
    let bench = binaries.server.with_file_name("konsen-bench");
    if !bench.exists() {
        bail!("{} is missing: build the workspace first", bench.display());
    }
    let etcd = ensure_etcd()?;
    let dir = cargo::target_dir()?.join("vs-etcd");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("[vs-etcd] working in {}", dir.display());
    if let Some(puts) = options.footprint_puts {
        return footprint(&bench, &etcd, &binaries.server, &dir, puts);
    }

    let rounds = options.rounds.max(1);
    // Memory is reported from the last round.
    let mut results: Vec<Round> = Vec::with_capacity(rounds);
    let (mut etcd_rss, mut konsen_rss) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if rounds > 1 {
            println!("[vs-etcd] round {} of {rounds}", round + 1);
        }
        let round_dir = dir.join(format!("round-{}", round + 1));
        let run_etcd = || -> Result<(Vec<Measured>, Vec<f64>)> {
            let mut cluster = start_etcd(&etcd, &round_dir.join("etcd"), &[])?;
            measure(&bench, &mut cluster, options.duration_secs)
        };
        let run_konsen = || -> Result<(Vec<Measured>, Vec<f64>)> {
            let mut cluster = start_konsen(&binaries.server, &round_dir.join("konsen"))?;
            measure(&bench, &mut cluster, options.duration_secs)
        };
        // The order flips every round (etcd first in rounds 1, 3, ...), so
        // that a drift of the machine over a run, or any effect of going
        // first, does not always favour the same cluster.
        let ((etcd_rows, rss_e), (konsen_rows, rss_k)) = if round % 2 == 0 {
            let e = run_etcd()?;
            (e, run_konsen()?)
        } else {
            let k = run_konsen()?;
            (run_etcd()?, k)
        };
        etcd_rss = rss_e;
        konsen_rss = rss_k;
        results.push((etcd_rows, konsen_rows));
    }

    println!();
    println!(
        "8-byte keys, 256-byte values, {} s per row, fsync on, 3 nodes on 127.0.0.1, {rounds} round(s){}",
        options.duration_secs,
        if rounds > 1 { " (medians)" } else { "" }
    );
    println!(
        "| {:<40} | {:>11} | {:>11} | {:>7} | {:>11} | {:>13} | {:>13} | {:>7} |",
        "row",
        "etcd req/s",
        "konsen req/s",
        "ratio",
        "ratio range",
        "etcd p50/p99",
        "konsen p50/p99",
        "p50 ×"
    );
    println!(
        "|{}|",
        ["-"; 8]
            .iter()
            .map(|_| "-----------")
            .collect::<Vec<_>>()
            .join("|")
    );
    for (i, row) in ROWS.iter().enumerate() {
        let pick = |f: &dyn Fn(&Round) -> f64| median(results.iter().map(f).collect());
        let ratios: Vec<f64> = results
            .iter()
            .map(|(e, k)| k[i].rps / e[i].rps.max(f64::MIN_POSITIVE))
            .collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let (e_p50, k_p50) = (pick(&|(e, _)| e[i].p50_ms), pick(&|(_, k)| k[i].p50_ms));
        println!(
            "| {:<40} | {:>11.0} | {:>11.0} | {:>6.2}× | {:>4.2}–{:<4.2}× | {:>5.2}/{:<6.2}ms | {:>5.2}/{:<6.2}ms | {:>6.2}× |",
            row.name,
            pick(&|(e, _)| e[i].rps),
            pick(&|(_, k)| k[i].rps),
            median(ratios),
            lo,
            hi,
            e_p50,
            pick(&|(e, _)| e[i].p99_ms),
            k_p50,
            pick(&|(_, k)| k[i].p99_ms),
            k_p50 / e_p50.max(f64::MIN_POSITIVE),
        );
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "server RSS after the 1000-client row of the last round (MiB per node): etcd {}; konsen {}",
        fmt(&etcd_rss),
        fmt(&konsen_rss)
    );
    let errors: u64 = results
        .iter()
        .flat_map(|(e, k)| e.iter().chain(k))
        .map(|m| m.errors)
        .sum();
    if errors > 0 {
        println!(
            "note: {errors} requests failed in all; see the rows' logs in {}",
            dir.display()
        );
    }
    Ok(())
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "median of no values");
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The etcd binary, installed from Debian's `etcd-server` if missing.
fn ensure_etcd() -> Result<PathBuf> {
    let found = |p: &str| Path::new(p).exists().then(|| PathBuf::from(p));
    if let Some(p) = found("/usr/bin/etcd") {
        return Ok(p);
    }
    println!("[vs-etcd] etcd not found: apt-get install -y etcd-server");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "etcd-server"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get install etcd-server failed ({status}); install it and run again");
    }
    found("/usr/bin/etcd").context("etcd-server installed but /usr/bin/etcd is missing")
}

/// Fails, naming the port, if one of `ports` on 127.0.0.1 is taken: a
/// cluster started there would not get it, and the one holding it would
/// be measured in its place.
fn ensure_ports_free(name: &str, ports: impl IntoIterator<Item = u16>) -> Result<()> {
    for port in ports {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            bail!(
                "port 127.0.0.1:{port}, which the {name} cluster needs, is taken ({e}); \
                 stop whatever listens there (a cluster left running?) and run again"
            );
        }
    }
    Ok(())
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

/// Node i (1 to 3) of each cluster listens on these plus i.
const ETCD_CLIENT_PORT_BASE: u16 = 23790;
const ETCD_PEER_PORT_BASE: u16 = 23800;
const KONSEN_PORT_BASE: u16 = 23890;

fn start_etcd(etcd: &Path, dir: &Path, extra: &[&str]) -> Result<Cluster> {
    ensure_ports_free(
        "etcd",
        (1..=3).flat_map(|i| [ETCD_CLIENT_PORT_BASE + i, ETCD_PEER_PORT_BASE + i]),
    )?;
    fs::create_dir_all(dir)?;
    let peers: Vec<String> = (1..=3)
        .map(|i| format!("e{i}=http://127.0.0.1:{}", ETCD_PEER_PORT_BASE + i))
        .collect();
    let mut cluster = Cluster {
        name: "etcd",
        children: Vec::new(),
        endpoints: (1..=3)
            .map(|i| format!("127.0.0.1:{}", ETCD_CLIENT_PORT_BASE + i))
            .collect(),
        dir: dir.to_path_buf(),
    };
    for i in 1..=3 {
        let client = format!("http://127.0.0.1:{}", ETCD_CLIENT_PORT_BASE + i);
        let peer = format!("http://127.0.0.1:{}", ETCD_PEER_PORT_BASE + i);
        let mut cmd = Command::new(etcd);
        cmd.arg(format!("--name=e{i}"))
            .arg(format!(
                "--data-dir={}",
                dir.join(format!("e{i}")).display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", peers.join(",")))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=konsen-vs-etcd")
            .arg("--logger=zap")
            .args(extra);
        cluster
            .children
            .push(spawn_logged(cmd, &dir.join(format!("e{i}.log")))?);
    }
    println!("[vs-etcd] etcd started on {}", cluster.endpoints.join(","));
    Ok(cluster)
}

fn start_konsen(server: &Path, dir: &Path) -> Result<Cluster> {
    ensure_ports_free("konsen", (1..=3).map(|i| KONSEN_PORT_BASE + i))?;
    fs::create_dir_all(dir)?;
    let endpoints: Vec<String> = (1..=3)
        .map(|i| format!("127.0.0.1:{}", KONSEN_PORT_BASE + i))
        .collect();
    let config = dir.join("cluster.yml");
    let yaml: String = std::iter::once("endpoints:\n".to_string())
        .chain(endpoints.iter().map(|e| format!("  - {e}\n")))
        .collect();
    fs::write(&config, yaml)?;
    let mut cluster = Cluster {
        name: "konsen",
        children: Vec::new(),
        endpoints,
        dir: dir.to_path_buf(),
    };
    for i in 1..=3 {
        let mut cmd = Command::new(server);
        cmd.arg("--config")
            .arg(&config)
            .arg("--node-id")
            .arg(i.to_string())
            .arg("--data-dir")
            .arg(dir.join(format!("node-{i}")));
        cluster
            .children
            .push(spawn_logged(cmd, &dir.join(format!("node-{i}.log")))?);
    }
    println!(
        "[vs-etcd] konsen started on {}",
        cluster.endpoints.join(",")
    );
    Ok(cluster)
}

/// Keys the footprint run writes.
const FOOTPRINT_KEYS: &str = "1000";
/// etcd's auto-compaction in the footprint run: konsen's default.
const ETCD_FOOTPRINT_COMPACTION: &[&str] = &[
    "--auto-compaction-mode=revision",
    "--auto-compaction-retention=10000",
];
/// How long the servers get after the load, for a last compaction.
const FOOTPRINT_SETTLE: Duration = Duration::from_secs(5);

/// `--footprint`: memory and disk of each cluster after `puts` puts.
fn footprint(bench: &Path, etcd: &Path, server: &Path, dir: &Path, puts: u64) -> Result<()> {
    let mut report = Vec::new();
    for name in ["etcd", "konsen"] {
        let (mut cluster, data_dirs): (Cluster, Vec<PathBuf>) = if name == "etcd" {
            let d = dir.join("etcd");
            let c = start_etcd(etcd, &d, ETCD_FOOTPRINT_COMPACTION)?;
            (c, (1..=3).map(|i| d.join(format!("e{i}"))).collect())
        } else {
            let d = dir.join("konsen");
            let c = start_konsen(server, &d)?;
            (c, (1..=3).map(|i| d.join(format!("node-{i}"))).collect())
        };
        wait_ready(bench, &mut cluster)?;
        println!("[vs-etcd] {name}: {puts} puts to {FOOTPRINT_KEYS} keys ...");
        let endpoints = cluster.endpoints.join(",");
        let out = Command::new(bench)
            .args(["--endpoints", &endpoints, "--target-leader", "--json"])
            .args(["--clients", "100", "--conns", "10"])
            .args(["--total", &puts.to_string(), "--key-space", FOOTPRINT_KEYS])
            .args(["--key-size", "8", "--val-size", "256", "put"])
            .stderr(Stdio::inherit())
            .output()
            .context("running konsen-bench")?;
        if !out.status.success() {
            bail!(
                "konsen-bench failed on {name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let m = parse(&out.stdout).context("reading konsen-bench's report")?;
        sleep(FOOTPRINT_SETTLE);
        cluster.check_running()?;
        let rss = cluster.rss_mib();
        let disk: Vec<f64> = data_dirs
            .iter()
            .map(|d| disk_bytes(d) as f64 / (1024.0 * 1024.0))
            .collect();
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        report.push(format!(
            "| {name:<6} | {:>8.0} | {:>6} | {:>16} | {:>16} |",
            m.rps,
            m.errors,
            list(&rss),
            list(&disk)
        ));
    }
    println!();
    println!(
        "{puts} puts (8-byte keys, 256-byte values, 100 clients) to {FOOTPRINT_KEYS} keys; \
         auto-compaction keeping 10,000 revisions on both"
    );
    println!("| server | puts/s   | errors | RSS MiB per node | disk MiB per node |");
    println!("|--------|----------|--------|------------------|-------------------|");
    for line in report {
        println!("{line}");
    }
    Ok(())
}

/// Bytes allocated on disk under `dir` (as `du` counts them).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Waits for the cluster to take a write, then runs every row.
fn measure(bench: &Path, cluster: &mut Cluster, secs: u64) -> Result<(Vec<Measured>, Vec<f64>)> {
    wait_ready(bench, cluster)?;
    let endpoints = cluster.endpoints.join(",");
    let mut rows = Vec::new();
    let mut rss = Vec::new();
    for (i, row) in ROWS.iter().enumerate() {
        println!("[vs-etcd] {}: {} ...", cluster.name, row.name);
        let out = Command::new(bench)
            .args(["--endpoints", &endpoints, "--target-leader", "--json"])
            .args([
                "--clients",
                &row.clients.to_string(),
                "--conns",
                &row.conns.to_string(),
            ])
            .args([
                "--duration",
                &secs.to_string(),
                "--key-size",
                "8",
                "--val-size",
                "256",
            ])
            .args(["--key-space", "10000"])
            .args(row.workload)
            .stderr(Stdio::inherit())
            .output()
            .context("running konsen-bench")?;
        if !out.status.success() {
            bail!(
                "konsen-bench failed on {} ({}): {}",
                cluster.name,
                row.name,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        rows.push(
            parse(&out.stdout)
                .with_context(|| format!("reading konsen-bench's report for {}", row.name))?,
        );
        cluster.check_running()?;
        if i == RSS_AFTER_ROW {
            rss = cluster.rss_mib();
        }
    }
    Ok((rows, rss))
}

/// Waits for the cluster to take a write.
fn wait_ready(bench: &Path, cluster: &mut Cluster) -> Result<()> {
    let endpoints = cluster.endpoints.join(",");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        cluster.check_running()?;
        let ok = Command::new(bench)
            .args([
                "--endpoints",
                &endpoints,
                "--target-leader",
                "--total",
                "1",
                "--timeout",
                "2",
                "put",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the {} cluster took no write within {READY_TIMEOUT:?}",
                cluster.name
            );
        }
        sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Reads konsen-bench's `--json` report.
fn parse(json: &[u8]) -> Result<Measured> {
    let v: serde_json::Value = serde_json::from_slice(json)?;
    let num = |path: &[&str]| {
        path.iter()
            .try_fold(&v, |v, k| v.get(k))
            .and_then(|v| v.as_f64())
            .with_context(|| format!("field {} missing", path.join(".")))
    };
    Ok(Measured {
        rps: num(&["requests_per_second"])?,
        p50_ms: num(&["latency_ms", "p50"])?,
        p99_ms: num(&["latency_ms", "p99"])?,
        errors: num(&["errors"])? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bench_report() {
        let json = br#"{"requests_per_second": 1234.5, "errors": 2, "latency_ms": {"p50": 1.5, "p99": 9.0}}"#;
        let m = parse(json).expect("parses");
        assert_eq!((m.rps, m.p50_ms, m.p99_ms, m.errors), (1234.5, 1.5, 9.0, 2));
        assert!(parse(br#"{"errors": 0}"#).is_err());
    }

    #[test]
    fn median_takes_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
    }
}
