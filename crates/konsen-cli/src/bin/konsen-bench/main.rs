//! konsen-bench: a load generator that speaks the etcd v3 API, so the same
//! load runs against konsen and against etcd alike.
//!
//! `konsen-bench --endpoints A,B,C [--conns N] [--clients N]
//! [--total N | --duration SECS] [--key-size B] [--val-size B]
//! [--key-space N] [--target-leader] [--json] put | txn-put
//! | range [--serializable] [--rev-back N] | mix [--read-ratio R] [--txn] [--rev-back N]`
//!
//! `txn-put` is a Txn that compares the key's mod_revision (with one that
//! always holds: less than `i64::MAX`), then puts it: the cost of a
//! compare-and-swap without the read a real one needs first. `--rev-back N`
//! reads every key as of N revisions before the run starts (a historical
//! read), instead of at the latest revision.
//!
//! Each client runs one request at a time, in a loop, over one of `conns`
//! shared HTTP/2 connections (a lean gRPC client, `grpc.rs`). Latencies go into an HDR histogram; the report
//! gives throughput and p50, p90, p99, p99.9 and max. A progress bar shows
//! on stderr while it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use konsen_rpc::etcd::etcdserverpb::cluster_client::ClusterClient;
use konsen_rpc::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use konsen_rpc::etcd::etcdserverpb::{
    Compare, MemberListRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    StatusRequest, TxnRequest, TxnResponse, compare, request_op,
};
use tonic::transport::{Channel, Endpoint};

mod grpc;
use grpc::Conn;

/// Clients one run may start.
const CLIENTS_MAX: usize = 100_000;
/// Connections one run may open.
const CONNS_MAX: usize = 10_000;
/// Histogram bounds: 1 µs to 60 s, 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "konsen-bench",
    about = "Load generator for the etcd v3 API (konsen or etcd)"
)]
struct Args {
    /// Comma-separated host:port list.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// gRPC connections, shared by the clients round-robin.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Concurrent clients, each with one request outstanding.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests in all (default 10,000 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    total: Option<u64>,
    /// Seconds to run instead of a request count.
    #[arg(long)]
    duration: Option<u64>,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Distinct keys written and read.
    #[arg(long, default_value_t = 1)]
    key_space: u64,
    /// Send everything to the leader (found with Maintenance.Status).
    #[arg(long)]
    target_leader: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Per-request deadline in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum Workload {
    /// Puts only.
    Put,
    /// Txns only: compare the key's mod_revision (always true), then put.
    TxnPut,
    /// Ranges (single-key gets) only.
    Range {
        /// Serializable reads (local, possibly stale) instead of linearizable.
        #[arg(long)]
        serializable: bool,
        /// Read as of this many revisions before the run (0: the latest).
        #[arg(long, default_value_t = 0)]
        rev_back: i64,
    },
    /// Puts (or txn-puts) and linearizable ranges.
    Mix {
        /// Share of requests that are reads, 0 to 1.
        #[arg(long, default_value_t = 0.5)]
        read_ratio: f64,
        /// Writes are txn-puts instead of puts.
        #[arg(long)]
        txn: bool,
        /// Read as of this many revisions before the run (0: the latest).
        #[arg(long, default_value_t = 0)]
        rev_back: i64,
    },
}

impl Workload {
    fn rev_back(&self) -> i64 {
        match *self {
            Workload::Range { rev_back, .. } | Workload::Mix { rev_back, .. } => rev_back,
            Workload::Put | Workload::TxnPut => 0,
        }
    }
}

/// What one request of a run is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Call {
    Put,
    TxnPut,
    Range { serializable: bool },
}

#[derive(Debug)]
struct Stop {
    total: Option<u64>,
    deadline: Option<Instant>,
    issued: AtomicU64,
    done: AtomicU64,
}

impl Stop {
    /// Claims the next request, or says to stop.
    fn next(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        match self.total {
            Some(total) if n >= total => None,
            _ => Some(n),
        }
    }
}

#[derive(Debug)]
struct ClientResult {
    errors: u64,
    first_error: Option<String>,
}

/// The latencies of every client, in one histogram: 1,000 clients with one
/// each (about 140 KiB apiece) made nearly every record a cache miss, 4 %
/// of the generator's CPU. The runtime has one thread, so the lock is
/// never contended.
type Latencies = Arc<Mutex<Histogram<u64>>>;

// One thread: the generator shares the machine with the servers it
// measures, and a multi-threaded runtime spent ~15 % more CPU per request
// (wake-ups between its workers), CPU the servers then lacked.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        bail!("--clients must be between 1 and {CLIENTS_MAX}");
    }
    if args.conns == 0 || args.conns > CONNS_MAX {
        bail!("--conns must be between 1 and {CONNS_MAX}");
    }
    if args.key_size == 0 || args.key_space == 0 {
        bail!("--key-size and --key-space must be at least 1");
    }
    if let Workload::Mix { read_ratio, .. } = args.workload
        && !(0.0..=1.0).contains(&read_ratio)
    {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.workload.rev_back() < 0 {
        bail!("--rev-back must be at least 0");
    }
    let timeout = Duration::from_secs(args.timeout);
    let endpoints = if args.target_leader {
        vec![find_leader(&args.endpoints, timeout).await?]
    } else {
        args.endpoints.clone()
    };
    let mut conns = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let ep = &endpoints[i % endpoints.len()];
        let conn = tokio::time::timeout(timeout, Conn::connect(ep))
            .await
            .map_err(|_| anyhow::anyhow!("connecting timed out"))
            .and_then(|r| r)
            .with_context(|| format!("cannot connect to {ep}"))?;
        conns.push(conn);
    }
    let revision = match args.workload.rev_back() {
        0 => 0,
        back => {
            let current = current_revision(&mut conns[0], timeout).await?;
            if current <= back {
                bail!("--rev-back {back}: the store is only at revision {current}");
            }
            current - back
        }
    };
    let total = match (args.total, args.duration) {
        (Some(t), _) => Some(t),
        (None, Some(_)) => None,
        (None, None) => Some(10_000),
    };
    let stop = Arc::new(Stop {
        total,
        deadline: args
            .duration
            .map(|s| Instant::now() + Duration::from_secs(s)),
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
    });
    let bar = progress_bar(total, args.duration);
    let ticker = {
        let (stop, bar) = (stop.clone(), bar.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match total {
                    Some(_) => bar.set_position(stop.done.load(Ordering::Relaxed)),
                    None => bar.set_position(started.elapsed().as_secs()),
                }
            }
        })
    };
    let value = vec![b'v'; args.val_size];
    let latencies: Latencies = Arc::new(Mutex::new(Histogram::new_with_bounds(
        1,
        LATENCY_US_MAX,
        3,
    )?));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        tasks.push(tokio::spawn(run_client(
            conns[c % conns.len()].clone(),
            timeout,
            c as u64,
            args.workload,
            revision,
            args.key_size,
            args.key_space,
            value.clone(),
            stop.clone(),
            latencies.clone(),
        )));
    }
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let r = t.await.context("client task panicked")??;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let latencies = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("a client panicked while recording"))?;
    report(&args, &latencies, errors, first_error, elapsed);
    Ok(())
}

fn progress_bar(total: Option<u64>, duration: Option<u64>) -> ProgressBar {
    let (len, unit) = match (total, duration) {
        (Some(t), _) => (t, "requests"),
        (None, Some(d)) => (d, "seconds"),
        (None, None) => (0, ""),
    };
    let bar = ProgressBar::new(len);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} ({{elapsed}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

async fn connect(endpoint: &str, timeout: Duration) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .with_context(|| format!("bad endpoint {endpoint}"))?
        .timeout(timeout)
        .connect_timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))
}

/// The leader's endpoint: one of `endpoints` whose Status says it leads,
/// or else the leader's client URL from Cluster.MemberList.
async fn find_leader(endpoints: &[String], timeout: Duration) -> Result<String> {
    let mut leader_id = 0;
    let mut any_channel = None;
    for ep in endpoints {
        let Ok(channel) = connect(ep, timeout).await else {
            continue;
        };
        let Ok(status) = MaintenanceClient::new(channel.clone())
            .status(StatusRequest {})
            .await
        else {
            continue;
        };
        let status = status.into_inner();
        let me = status.header.map(|h| h.member_id).unwrap_or(0);
        if status.leader != 0 && status.leader == me {
            return Ok(ep.clone());
        }
        leader_id = leader_id.max(status.leader);
        any_channel = Some(channel);
    }
    if let (true, Some(channel)) = (leader_id != 0, any_channel) {
        let members = ClusterClient::new(channel)
            .member_list(MemberListRequest::default())
            .await
            .context("asking for the member list to find the leader")?
            .into_inner();
        if let Some(url) = members
            .members
            .iter()
            .find(|m| m.id == leader_id)
            .and_then(|m| m.client_ur_ls.first())
        {
            return Ok(url.trim_start_matches("http://").to_string());
        }
    }
    bail!("no leader found through {endpoints:?}")
}

/// The store's revision, from a range's header.
async fn current_revision(conn: &mut Conn, timeout: Duration) -> Result<i64> {
    let uri = conn.uri("/etcdserverpb.KV/Range")?;
    let range = RangeRequest {
        key: b"\0".to_vec(),
        ..Default::default()
    };
    let answer = tokio::time::timeout(timeout, conn.unary::<_, RangeResponse>(&uri, &range))
        .await
        .map_err(|_| anyhow::anyhow!("reading the revision timed out"))?
        .map_err(|e| anyhow::anyhow!("reading the revision: {e}"))?;
    Ok(answer.header.map_or(0, |h| h.revision))
}

/// What request `n` of a run of `workload` is: a deterministic spread of
/// reads and writes in a mix's ratio.
fn call(workload: Workload, n: u64) -> Call {
    match workload {
        Workload::Put => Call::Put,
        Workload::TxnPut => Call::TxnPut,
        Workload::Range { serializable, .. } => Call::Range { serializable },
        Workload::Mix {
            read_ratio, txn, ..
        } => {
            if ((n % 1000) as f64 / 1000.0) < read_ratio {
                Call::Range {
                    serializable: false,
                }
            } else if txn {
                Call::TxnPut
            } else {
                Call::Put
            }
        }
    }
}

/// `txn-put`: if the key's mod_revision is below `i64::MAX` (always),
/// put it.
fn txn_put(key: Vec<u8>, value: bytes::Bytes) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Less as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.clone(),
            range_end: Vec::new(),
            target_union: Some(compare::TargetUnion::ModRevision(i64::MAX)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key,
                value,
                ..Default::default()
            })),
        }],
        failure: Vec::new(),
    }
}

/// The key for request `n`: `n mod key_space`, zero-padded to `size` bytes.
fn key(n: u64, key_space: u64, size: usize) -> Vec<u8> {
    let digits = (n % key_space).to_string();
    let digits = digits.as_bytes();
    let mut key = vec![b'0'; size.saturating_sub(digits.len())];
    key.extend_from_slice(&digits[digits.len().saturating_sub(size)..]);
    key
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    mut conn: Conn,
    timeout: Duration,
    client: u64,
    workload: Workload,
    revision: i64,
    key_size: usize,
    key_space: u64,
    value: Vec<u8>,
    stop: Arc<Stop>,
    latencies: Latencies,
) -> Result<ClientResult> {
    let (mut errors, mut first_error) = (0, None);
    let value = bytes::Bytes::from(value);
    let (put_uri, range_uri, txn_uri) = (
        conn.uri("/etcdserverpb.KV/Put")?,
        conn.uri("/etcdserverpb.KV/Range")?,
        conn.uri("/etcdserverpb.KV/Txn")?,
    );
    while let Some(n) = stop.next() {
        let key = key(
            n.wrapping_mul(2_654_435_761).wrapping_add(client),
            key_space,
            key_size,
        );
        let t = Instant::now();
        let call = async {
            match call(workload, n) {
                Call::Put => {
                    let put = PutRequest {
                        key,
                        value: value.clone(),
                        ..Default::default()
                    };
                    conn.unary::<_, PutResponse>(&put_uri, &put)
                        .await
                        .map(|_| ())
                }
                Call::TxnPut => {
                    let txn = txn_put(key, value.clone());
                    match conn.unary::<_, TxnResponse>(&txn_uri, &txn).await {
                        Ok(r) if !r.succeeded => {
                            Err(grpc::CallError::Protocol("txn-put: compare failed".into()))
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Call::Range { serializable } => {
                    let range = RangeRequest {
                        key,
                        serializable,
                        revision,
                        ..Default::default()
                    };
                    conn.unary::<_, RangeResponse>(&range_uri, &range)
                        .await
                        .map(|_| ())
                }
            }
        };
        let res = match tokio::time::timeout(timeout, call).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        let us = (t.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
        match res {
            Ok(()) => latencies
                .lock()
                .map_err(|_| anyhow::anyhow!("a client panicked while recording"))?
                .record(us)?,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
        stop.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(ClientResult {
        errors,
        first_error,
    })
}

fn report(
    args: &Args,
    h: &Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
) {
    let ok = h.len();
    let secs = elapsed.as_secs_f64();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let rev_back = match args.workload.rev_back() {
        0 => String::new(),
        back => format!(" rev_back={back}"),
    };
    let workload = match args.workload {
        Workload::Put => "put".to_string(),
        Workload::TxnPut => "txn-put".to_string(),
        Workload::Range {
            serializable: true, ..
        } => format!("range serializable{rev_back}"),
        Workload::Range {
            serializable: false,
            ..
        } => format!("range linearizable{rev_back}"),
        Workload::Mix {
            read_ratio, txn, ..
        } => format!(
            "mix read_ratio={read_ratio}{}{rev_back}",
            if txn { " txn" } else { "" }
        ),
    };
    if args.json {
        let json = serde_json::json!({
            "workload": workload,
            "clients": args.clients,
            "conns": args.conns,
            "ok": ok,
            "errors": errors,
            "first_error": first_error,
            "seconds": secs,
            "requests_per_second": ok as f64 / secs,
            "latency_ms": {
                "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
                "max": h.max() as f64 / 1000.0,
            },
        });
        println!("{json}");
        return;
    }
    println!(
        "workload   {workload} ({} clients over {} connections)",
        args.clients, args.conns
    );
    println!("requests   {ok} ok, {errors} failed in {secs:.2} s");
    println!("throughput {:.0} requests/s", ok as f64 / secs);
    println!(
        "latency    p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    if let Some(e) = first_error {
        println!("first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_asked_size_and_spread_over_the_space() {
        assert_eq!(key(7, 1000, 8), b"00000007");
        assert_eq!(key(1234, 1000, 2), b"34");
        // Wider than any format width: no panic.
        assert_eq!(key(5, 10, 70_000).len(), 70_000);
        let distinct: std::collections::BTreeSet<_> = (0..100).map(|n| key(n, 10, 4)).collect();
        assert_eq!(distinct.len(), 10);
    }

    #[test]
    fn a_mix_spreads_reads_and_writes_in_its_ratio() {
        let mix = Workload::Mix {
            read_ratio: 0.9,
            txn: true,
            rev_back: 0,
        };
        let calls: Vec<Call> = (0..1000).map(|n| call(mix, n)).collect();
        let reads = calls
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Call::Range {
                        serializable: false
                    }
                )
            })
            .count();
        assert_eq!(reads, 900);
        assert_eq!(calls.iter().filter(|&&c| c == Call::TxnPut).count(), 100);
        let put_mix = Workload::Mix {
            read_ratio: 0.0,
            txn: false,
            rev_back: 0,
        };
        assert!((0..100).all(|n| call(put_mix, n) == Call::Put));
    }

    #[test]
    fn a_txn_put_compares_the_mod_revision_then_puts() {
        let t = txn_put(b"k".to_vec(), bytes::Bytes::from_static(b"v"));
        assert_eq!(t.compare.len(), 1);
        assert_eq!(t.compare[0].target, compare::CompareTarget::Mod as i32);
        assert_eq!(t.compare[0].key, b"k");
        assert!(matches!(
            &t.success[..],
            [RequestOp { request: Some(request_op::Request::RequestPut(p)) }] if p.key == b"k" && p.value == "v"
        ));
        assert!(t.failure.is_empty());
    }

    #[test]
    fn stop_hands_out_exactly_total_requests() {
        let stop = Stop {
            total: Some(3),
            deadline: None,
            issued: AtomicU64::new(0),
            done: AtomicU64::new(0),
        };
        let got: Vec<_> = std::iter::from_fn(|| stop.next()).collect();
        assert_eq!(got, vec![0, 1, 2]);
    }
}
