//! `cargo xtask chaos`: the fault-injection suite. Real `konsen-server`
//! processes on 127.0.0.1, real etcd clients, faults injected by signals
//! (SIGKILL, SIGSTOP/SIGCONT, SIGTERM) and by cutting peer links (a proxy
//! per link), and the linearizability checker over the recorded history.
//!
//! One run of a scenario:
//! 1. start a cluster and wait for a leader;
//! 2. run the clients ([`workload`]) while the schedule ([`faults`])
//!    injects the scenario's faults for `--duration` seconds;
//! 3. heal (the network, the dead, the paused), stop the clients, and
//!    require recovery within [`RECOVERY_BOUND`]: a leader, and every node
//!    has applied the leader's commit index;
//! 4. read every key through every node (linearizable; these reads are
//!    part of the history), and check the whole history per key.
//!
//! A linearizable history whose final reads come after every write also
//! proves that no acknowledged write was lost: the final read must return
//! the last write of some valid order, which places every acknowledged
//! write before it. The runner states the same thing directly as well (a
//! key with an acknowledged write is never read back as missing).
//!
//! On failure it prints the seed, the scenario, the fault timeline, and the
//! history of the failing key, keeps the run directory (node logs), and
//! exits non-zero.
//!
//! `--failover N` measures instead: N times, SIGKILL the leader and time
//! until a write succeeds again through any node.
//!
//! # Layout
//!
//! * `cluster.rs`: the node processes, signals, status queries.
//! * `workload.rs`: the clients and the history they record.
//! * `faults.rs`: scenarios, the seeded schedule, the timeline.
//! * `proxy.rs`: TCP proxies on the peer links, for partitions.
//! * `watchers.rs`: a watch per node through the faults, and its check.

mod cluster;
mod faults;
mod proxy;
mod watchers;
mod workload;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use konsen_rpc::etcd::etcdserverpb::kv_client::KvClient;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use self::cluster::Cluster;
use self::faults::{Scenario, Timeline};
use self::workload::Recorder;
use crate::cargo::Binaries;
use crate::linearizability::{self, CasResult, Op, OpKind, Outcome};

/// How long a healed cluster gets to have a leader and every node caught
/// up with the leader's commit index.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// How long a fresh cluster gets to elect its first leader.
const FIRST_LEADER_WAIT: Duration = Duration::from_secs(30);
/// Attempts at each final read (one key through one node).
const FINAL_READ_ATTEMPTS: usize = 10;
/// Client ids of the final reads start here (node id added).
const FINAL_READER: u64 = 1000;
/// How long one failover round may take to accept a write again.
const FAILOVER_WAIT: Duration = Duration::from_secs(30);
/// A failover round slower than the p99 goal keeps the node logs.
const FAILOVER_SLOW: Duration = Duration::from_millis(700);
/// Nodes a chaos cluster may have.
const NODES: std::ops::RangeInclusive<usize> = 3..=7;
/// CASes that must have swapped in a run: with fewer, the run did not test
/// them (a server that refuses every Txn would leave only unknown CASes,
/// which the checker accepts).
const CAS_SWAPPED_MIN: usize = 1;

/// What `cargo xtask chaos` was asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds of faults per scenario.
    #[arg(long = "duration", default_value_t = 30)]
    pub duration_secs: u64,
    /// Seed of the fault schedule and the clients (default: from the
    /// clock; always printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// kill-random, kill-leader, pause-random, pause-leader,
    /// rolling-restart, partition-random, partition-leader,
    /// partition-one-way, partition-bridge, slow-links, mixed, or all.
    #[arg(long, default_value = "all")]
    pub scenario: String,
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    pub clients: u64,
    /// Keys the clients share.
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// Take konsen-server and konsen-cli from DIR instead of building.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Negative control: start the nodes with the server's UNSAFE
    /// `unsafe_stale_reads`; the check is expected to fail.
    #[arg(long)]
    pub unsafe_stale_reads: bool,
    /// Negative control of the watch check: start the nodes with the
    /// server's UNSAFE `unsafe_watch_ignore_gaps`; the check is expected
    /// to fail.
    #[arg(long)]
    pub unsafe_watch_ignore_gaps: bool,
    /// Instead of a scenario: kill the leader N times and report the
    /// time until a write succeeds again (median, p99).
    #[arg(long, value_name = "N")]
    pub failover: Option<usize>,
    /// The nodes' tick_ms (default: the server's, 100 ms); election
    /// timeouts scale with it.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// The nodes' snapshot_entries_max: small, so that logs are compacted
    /// and nodes that were down catch up through snapshots during the
    /// run (a fifth of it is kept as the log tail).
    #[arg(long, default_value_t = 300)]
    pub snapshot_entries_max: u64,
    /// Keep each run's directory (node logs) even when it passes.
    #[arg(long)]
    pub keep: bool,
}

impl Options {
    /// The flags that shape a run, as given on the command line.
    fn flags(&self) -> String {
        let mut flags = format!(
            "--duration {} --nodes {} --clients {} --keys {}",
            self.duration_secs, self.nodes, self.clients, self.keys
        );
        if let Some(tick_ms) = self.tick_ms {
            flags.push_str(&format!(" --tick-ms {tick_ms}"));
        }
        if self.unsafe_stale_reads {
            flags.push_str(" --unsafe-stale-reads");
        }
        if self.unsafe_watch_ignore_gaps {
            flags.push_str(" --unsafe-watch-ignore-gaps");
        }
        flags.push_str(&format!(
            " --snapshot-entries-max {}",
            self.snapshot_entries_max
        ));
        flags
    }

    /// The cluster file's settings beyond the endpoints.
    fn settings_yaml(&self) -> String {
        let mut yaml = String::new();
        if let Some(tick_ms) = self.tick_ms {
            yaml.push_str(&format!("tick_ms: {tick_ms}\n"));
        }
        if self.unsafe_stale_reads {
            yaml.push_str("unsafe_stale_reads: true\n");
        }
        if self.unsafe_watch_ignore_gaps {
            yaml.push_str("unsafe_watch_ignore_gaps: true\n");
        }
        yaml.push_str(&format!(
            "snapshot_entries_max: {}\nsnapshot_tail_entries: {}\n",
            self.snapshot_entries_max,
            self.snapshot_entries_max / 5
        ));
        yaml
    }
}

/// Runs what `options` asks for; an error is a failed run.
pub fn run(options: &Options) -> Result<()> {
    if !NODES.contains(&options.nodes) {
        bail!(
            "--nodes {}: must be from {} to {}",
            options.nodes,
            NODES.start(),
            NODES.end()
        );
    }
    if options.clients == 0 || options.keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    let binaries = Binaries::prebuilt_or_build(options.bin_dir.as_deref())?;
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(rounds) = options.failover {
        return runtime.block_on(failover(&binaries.server, options, seed, rounds));
    }
    let scenarios: Vec<Scenario> = if options.scenario == "all" {
        Scenario::ALL.to_vec()
    } else {
        vec![options.scenario.parse()?]
    };
    println!(
        "[chaos] seed {seed}, {} nodes, {} clients, {} keys, {} s per scenario, tick {} ms{}",
        options.nodes,
        options.clients,
        options.keys,
        options.duration_secs,
        options.tick_ms.unwrap_or(100),
        if options.unsafe_stale_reads {
            ", UNSAFE STALE READS ON (negative control: a violation is expected)"
        } else if options.unsafe_watch_ignore_gaps {
            ", UNSAFE WATCH GAPS IGNORED (negative control: a watch violation is expected)"
        } else {
            ""
        }
    );
    for scenario in scenarios {
        runtime
            .block_on(run_scenario(&binaries.server, options, seed, scenario))
            .with_context(|| {
                format!(
                    "scenario {scenario} failed (seed {seed}; the same fault schedule again: \
                     cargo xtask chaos --scenario {scenario} --seed {seed} {}; timing still \
                     varies from run to run)",
                    options.flags()
                )
            })?;
    }
    println!("[chaos] all scenarios passed");
    Ok(())
}

/// A fresh run directory for `what`.
fn run_dir(what: &str, seed: u64) -> Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("konsen-chaos-{}-{what}-{seed}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    Ok(dir)
}

async fn run_scenario(
    server: &Path,
    options: &Options,
    seed: u64,
    scenario: Scenario,
) -> Result<()> {
    let dir = run_dir(scenario.name(), seed)?;
    println!(
        "[chaos] scenario {scenario}: starting {} nodes in {}",
        options.nodes,
        dir.display()
    );
    let result = scenario_in(server, options, seed, scenario, &dir).await;
    match &result {
        Ok(()) if !options.keep => {
            let _ = fs::remove_dir_all(&dir);
        }
        _ => println!("[chaos] node logs kept in {} (node-N.log)", dir.display()),
    }
    result
}

async fn scenario_in(
    server: &Path,
    options: &Options,
    seed: u64,
    scenario: Scenario,
    dir: &Path,
) -> Result<()> {
    let mut cluster = Cluster::start(
        server,
        dir,
        options.nodes,
        &options.settings_yaml(),
        scenario.partitions(),
    )
    .await?;
    println!("[chaos] nodes 1..: {}", cluster.endpoints.join(", "));
    cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .await
        .context("the fresh cluster")?;
    let recorder = Recorder::new(Instant::now());
    let timeline = Timeline::default();
    let keys = workload::keys(options.keys);
    let stop = Arc::new(AtomicBool::new(false));
    let channels: Vec<_> = cluster
        .ids()
        .iter()
        .map(|&id| cluster.channel(id))
        .collect();
    let clients: Vec<_> = (0..options.clients)
        .map(|c| {
            tokio::spawn(workload::client(
                c,
                seed,
                channels.clone(),
                keys.clone(),
                recorder.clone(),
                Arc::clone(&stop),
            ))
        })
        .collect();
    timeline.note(&recorder, format!("clients start ({scenario})"));
    let watchers = watchers::Watchers::start(&channels, &cluster.endpoints[0])?;
    let watching = watchers.watching.clone();

    let mut rng = SmallRng::seed_from_u64(seed);
    let until = Instant::now() + Duration::from_secs(options.duration_secs);
    let faulted = faults::run(
        scenario,
        &mut cluster,
        &mut rng,
        until,
        &recorder,
        &timeline,
    )
    .await;
    let healed = cluster.heal();
    // Recovery is timed from here: the clients' last operations (up to one
    // deadline) count against the bound.
    let healed_at = Instant::now();
    for what in healed.as_ref().map(Vec::as_slice).unwrap_or_default() {
        timeline.note(&recorder, what.clone());
    }
    timeline.note(&recorder, "faults over, healed");
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    timeline.note(&recorder, "clients stopped");
    let fail = |why: String| -> Result<()> {
        report_failure(seed, scenario, &timeline, &recorder, None);
        bail!("{why}")
    };
    if let Err(e) = faulted {
        return fail(format!("fault schedule: {e:#}"));
    }
    if let Err(e) = healed {
        return fail(format!("healing: {e:#}"));
    }
    let left = RECOVERY_BOUND.saturating_sub(healed_at.elapsed());
    let recovery = match cluster.wait_recovered(left).await {
        Ok(_) => healed_at.elapsed(),
        Err(e) => return fail(format!("{e:#} (bound {RECOVERY_BOUND:?} from healing)")),
    };
    timeline.note(
        &recorder,
        format!(
            "recovered {recovery:.1?} after healing: a leader, every node applied its commit index"
        ),
    );

    // The final reads: every key through every node.
    for id in cluster.ids() {
        let mut kv = KvClient::new(cluster.channel(id));
        for key in &keys {
            let mut done = false;
            for _ in 0..FINAL_READ_ATTEMPTS {
                let outcome =
                    workload::get(&mut kv, FINAL_READER + id, key.clone(), &recorder).await;
                if outcome == Outcome::Ok {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if !done {
                return fail(format!(
                    "final read of {key} through node {id} failed {FINAL_READ_ATTEMPTS} times"
                ));
            }
        }
    }
    if let Some(crash) = cluster.crashed() {
        return fail(crash);
    }
    // Every watcher must reach the last revision the clients wrote.
    let mut last = None;
    for id in cluster.ids() {
        let mut kv = KvClient::new(cluster.channel(id));
        let request = konsen_rpc::etcd::etcdserverpb::RangeRequest {
            key: b"chaos-".to_vec(),
            count_only: true,
            ..Default::default()
        };
        if let Ok(Ok(r)) = tokio::time::timeout(workload::REQUEST_DEADLINE, kv.range(request)).await
        {
            last = r.into_inner().header.map(|h| h.revision);
            break;
        }
    }
    let Some(last) = last else {
        return fail("no node answered a range for the last revision".into());
    };
    watchers.finish(last, RECOVERY_BOUND).await;
    let watch_verdict = {
        let history = recorder.history();
        let mut written = HashSet::new();
        let mut acknowledged = HashSet::new();
        for op in &history {
            if let Some(v) = written_value(op) {
                written.insert((op.key.clone(), v.to_string()));
                if op.outcome == Outcome::Ok {
                    acknowledged.insert((op.key.clone(), v.to_string()));
                }
            }
        }
        // The store starts at revision 1; the clients' first write is 2.
        watchers::check(&watching, &written, &acknowledged, 2, last)
    };
    let watch_summary = match watch_verdict {
        Ok(summary) => summary,
        Err(why) => {
            report_failure(seed, scenario, &timeline, &recorder, None);
            println!("[chaos] WATCH VIOLATION: {why}");
            bail!("WATCH VIOLATION: {why}")
        }
    };

    let history = recorder.history();
    let summary = Summary::of(&history);
    if let Some(key) = lost_write(&history) {
        report_failure(seed, scenario, &timeline, &recorder, Some((&key, None)));
        bail!("acknowledged write lost: key {key} was written, but a final read found nothing");
    }
    let checked = prune_unseen_unknown_writes(&history);
    let started = std::time::Instant::now();
    let verdict = tokio::task::spawn_blocking(move || linearizability::check(&checked))
        .await
        .context("the checker panicked")?;
    let check_time = started.elapsed();
    match verdict {
        Ok(()) if summary.cas_swapped < CAS_SWAPPED_MIN => {
            report_failure(seed, scenario, &timeline, &recorder, None);
            bail!(
                "linearizable, but fewer than {CAS_SWAPPED_MIN} compare-and-swaps (KV.Txn) \
                 succeeded, so CAS went untested ({summary})"
            )
        }
        Ok(()) => {
            timeline.print(&recorder);
            println!(
                "[chaos] scenario {scenario}: OK: {summary}; {} faults injected; {} snapshots \
                 installed; recovered in {recovery:.1?} (bound {RECOVERY_BOUND:?}); \
                 linearizable (checked in {check_time:.1?}); no acknowledged write lost; \
                 {watch_summary}",
                timeline.faults(),
                count_in_logs(dir, "installed snapshot at index"),
            );
            Ok(())
        }
        Err(violation) => {
            report_failure(
                seed,
                scenario,
                &timeline,
                &recorder,
                Some((&violation.key, Some(&*violation.stuck_at))),
            );
            println!("[chaos] VIOLATION: {violation}");
            bail!("VIOLATION: {violation} ({summary})")
        }
    }
}

/// Counts of a history, for the report.
struct Summary {
    ops: usize,
    writes: usize,
    reads: usize,
    cas: usize,
    ok: usize,
    failed: usize,
    unknown: usize,
    /// CASes that are `Ok` and swapped.
    cas_swapped: usize,
    /// CASes that are `Ok` and whose compare failed.
    cas_not_swapped: usize,
    cas_unknown: usize,
}

impl Summary {
    fn of(history: &[Op]) -> Summary {
        let count = |f: &dyn Fn(&Op) -> bool| history.iter().filter(|op| f(op)).count();
        let cas_ok = |swapped: bool| {
            count(&|op| match op.kind {
                OpKind::Cas { result, .. } => {
                    op.outcome == Outcome::Ok && (result == CasResult::Swapped) == swapped
                }
                _ => false,
            })
        };
        Summary {
            ops: history.len(),
            writes: count(&|op| matches!(op.kind, OpKind::Write(_))),
            reads: count(&|op| matches!(op.kind, OpKind::Read(_))),
            cas: count(&|op| matches!(op.kind, OpKind::Cas { .. })),
            ok: count(&|op| op.outcome == Outcome::Ok),
            failed: count(&|op| op.outcome == Outcome::Failed),
            unknown: count(&|op| op.outcome == Outcome::Unknown),
            cas_swapped: cas_ok(true),
            cas_not_swapped: cas_ok(false),
            cas_unknown: count(&|op| {
                matches!(op.kind, OpKind::Cas { .. }) && op.outcome == Outcome::Unknown
            }),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} operations ({} writes, {} reads, {} CAS; {} ok, {} failed, {} unknown; CAS: {} \
             swapped, {} compare failed, {} unknown)",
            self.ops,
            self.writes,
            self.reads,
            self.cas,
            self.ok,
            self.failed,
            self.unknown,
            self.cas_swapped,
            self.cas_not_swapped,
            self.cas_unknown
        )
    }
}

/// A key with an acknowledged write (a put, or a CAS that swapped) that a
/// final read found missing.
fn lost_write(history: &[Op]) -> Option<String> {
    let written: HashSet<&str> = history
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && written_value(op).is_some())
        .map(|op| op.key.as_str())
        .collect();
    history
        .iter()
        .find(|op| {
            op.client >= FINAL_READER
                && op.outcome == Outcome::Ok
                && op.kind == OpKind::Read(None)
                && written.contains(op.key.as_str())
        })
        .map(|op| op.key.clone())
}

/// The value `op` writes if it takes effect as a write (a put, or a CAS
/// that swaps).
fn written_value(op: &Op) -> Option<u64> {
    match op.kind {
        OpKind::Write(v) => Some(v),
        OpKind::Cas {
            new,
            result: CasResult::Swapped,
            ..
        } => Some(new),
        // An unknown CAS may have swapped, whatever its recorded result.
        OpKind::Cas { new, .. } if op.outcome == Outcome::Unknown => Some(new),
        _ => None,
    }
}

/// The values of its key that `op` depends on seeing (a value read, a
/// CAS's expected value, what a failed compare read), as `Some`; `None`
/// when it depends on what the key holds without naming it: a failed
/// compare that did not read only says "not the expected value", which
/// a write of any other value makes true.
fn values_depended_on(op: &Op) -> Option<Vec<u64>> {
    let mut values = Vec::new();
    match (op.outcome, op.kind) {
        (Outcome::Ok, OpKind::Read(seen)) => values.extend(seen),
        (_, OpKind::Cas { .. }) if op.outcome == Outcome::Failed => {}
        (
            Outcome::Ok,
            OpKind::Cas {
                result: CasResult::NotSwappedUnread,
                ..
            },
        ) => return None,
        (
            outcome,
            OpKind::Cas {
                expected, result, ..
            },
        ) => {
            values.extend(expected);
            if let (Outcome::Ok, CasResult::NotSwapped(current)) = (outcome, result) {
                values.extend(current);
            }
        }
        _ => {}
    }
    Some(values)
}

/// Drops unknown writes (puts and CASes) whose value nothing depends on
/// seeing ([`values_depended_on`]). This does not change the verdict:
/// take a valid order with such a write W of value v. Until the next write,
/// the key holds v, and nothing placed there can depend on it: no read
/// returns v, no CAS expects v or (failing) read v, and on keys with a
/// failed compare that did not read, nothing is pruned at all. So the next
/// operation after W is a put or nothing, and the order without W is valid
/// too (W is unknown: it may not have happened). Conversely, a valid order
/// without W is one of the full history in which W never happened. It
/// keeps the search small: each unknown write may otherwise take effect at
/// any point after its invocation.
fn prune_unseen_unknown_writes(history: &[Op]) -> Vec<Op> {
    let mut seen: HashSet<(&str, u64)> = HashSet::new();
    let mut keep_all: HashSet<&str> = HashSet::new();
    for op in history {
        match values_depended_on(op) {
            Some(values) => seen.extend(values.into_iter().map(|v| (op.key.as_str(), v))),
            None => {
                keep_all.insert(op.key.as_str());
            }
        }
    }
    history
        .iter()
        .filter(|op| {
            if op.outcome != Outcome::Unknown || keep_all.contains(op.key.as_str()) {
                return true;
            }
            match written_value(op) {
                Some(v) => seen.contains(&(op.key.as_str(), v)),
                None => true,
            }
        })
        .cloned()
        .collect()
}

/// Prints the seed, scenario, fault timeline, and the history of the
/// failing key, marking the operation the checker got stuck at (every
/// key's counts when no key is to blame).
fn report_failure(
    seed: u64,
    scenario: Scenario,
    timeline: &Timeline,
    recorder: &Recorder,
    failing: Option<(&str, Option<&Op>)>,
) {
    let ms = |ns: u64| ns as f64 / 1e6;
    let history = recorder.history();
    println!("[chaos] FAILED: scenario {scenario}, seed {seed}");
    timeline.print(recorder);
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &history {
        *per_key.entry(op.key.as_str()).or_default() += 1;
    }
    println!("[chaos] operations per key: {per_key:?}");
    let Some((key, stuck)) = failing else { return };
    let mut ops: Vec<&Op> = history.iter().filter(|op| op.key == key).collect();
    ops.sort_by_key(|op| (op.invoke, op.complete));
    println!(
        "[chaos] history of key {key:?} ({} operations, sorted by invoke; ms; client >= \
         {FINAL_READER} is a final read through node client-{FINAL_READER}):",
        ops.len()
    );
    for op in ops {
        let what = describe(op);
        let mark = if Some(op) == stuck {
            "  <-- no order explains this"
        } else {
            ""
        };
        println!(
            "    {:>10.3} .. {:>10.3}  client {:>4}  {:<32} {:?}{mark}",
            ms(op.invoke),
            ms(op.complete),
            op.client,
            what,
            op.outcome
        );
    }
}

/// One operation for the failing key's history, e.g. `cas 5 -> 7: saw 6`.
fn describe(op: &Op) -> String {
    let value = |v: Option<u64>| v.map_or("(none)".to_string(), |v| v.to_string());
    match op.kind {
        OpKind::Write(v) => format!("write {v}"),
        OpKind::Read(seen) => format!("read -> {}", value(seen)),
        OpKind::Cas {
            expected,
            new,
            result,
        } => {
            let what = format!("cas {} -> {new}", value(expected));
            match (op.outcome, result) {
                (Outcome::Ok, CasResult::Swapped) => format!("{what}: swapped"),
                (Outcome::Ok, CasResult::NotSwapped(seen)) => {
                    format!("{what}: saw {}", value(seen))
                }
                (Outcome::Ok, CasResult::NotSwappedUnread) => format!("{what}: not swapped"),
                _ => what,
            }
        }
    }
}

/// How many times `needle` occurs in the run's node logs.
fn count_in_logs(dir: &Path, needle: &str) -> usize {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .map(|text| text.matches(needle).count())
        .sum()
}

/// `--failover N`: kill the leader N times and time the way back to an
/// accepted write.
async fn failover(server: &Path, options: &Options, seed: u64, rounds: usize) -> Result<()> {
    if rounds == 0 {
        bail!("--failover 0: at least one round");
    }
    let dir = run_dir("failover", seed)?;
    println!(
        "[chaos] failover: {rounds} rounds on {} nodes, tick {} ms, election_ticks 10 (the \
         default), files in {}",
        options.nodes,
        options.tick_ms.unwrap_or(100),
        dir.display()
    );
    let mut cluster =
        Cluster::start(server, &dir, options.nodes, &options.settings_yaml(), false).await?;
    cluster
        .wait_for_leader(FIRST_LEADER_WAIT)
        .await
        .context("the fresh cluster")?;
    let recorder = Recorder::new(Instant::now());
    let mut times = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        cluster
            .wait_recovered(RECOVERY_BOUND)
            .await
            .with_context(|| format!("before round {round}"))?;
        let leader = cluster.wait_for_leader(FIRST_LEADER_WAIT).await?;
        cluster.kill_node(leader)?;
        let killed = Instant::now();
        let live: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|&id| id != leader)
            .collect();
        let mut attempt = 0usize;
        let took = loop {
            let id = live[attempt % live.len()];
            attempt += 1;
            let mut kv = KvClient::new(cluster.channel(id));
            let value = (round as u64) << 32 | attempt as u64;
            let outcome = workload::put(
                &mut kv,
                FINAL_READER,
                "failover".to_string(),
                value,
                &recorder,
            )
            .await;
            if outcome == Outcome::Ok {
                break killed.elapsed();
            }
            if killed.elapsed() > FAILOVER_WAIT {
                bail!(
                    "round {round}: no write accepted within {FAILOVER_WAIT:?} of killing leader {leader}"
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!(
            "[chaos] round {round}: killed leader {leader}; a write succeeded after {took:.1?}"
        );
        times.push(took);
        cluster.start_node(leader)?;
    }
    times.sort();
    let rank = |p: f64| {
        let i = ((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
        times[i]
    };
    println!(
        "[chaos] failover over {rounds} rounds: min {:.1?}, median {:.1?}, p99 {:.1?}, max {:.1?} \
         (goal: median <= 350 ms, p99 <= 700 ms)",
        times[0],
        rank(0.5),
        rank(0.99),
        times[times.len() - 1]
    );
    drop(cluster);
    if times[times.len() - 1] > FAILOVER_SLOW {
        println!(
            "[chaos] a round took over {FAILOVER_SLOW:?}: node logs kept in {}",
            dir.display()
        );
    } else {
        let _ = fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::Rng;
    use tonic::{Code, Status};

    use super::*;
    use crate::linearizability::tests::{cas, op};

    #[test]
    fn only_unseen_unknown_writes_are_pruned() {
        let h = [
            op(1, OpKind::Write(1), 0, 1, Outcome::Unknown),
            op(1, OpKind::Write(2), 2, 3, Outcome::Unknown),
            op(2, OpKind::Write(3), 2, 3, Outcome::Ok),
            op(3, OpKind::Read(Some(2)), 4, 5, Outcome::Ok),
        ];
        let kept = prune_unseen_unknown_writes(&h);
        assert_eq!(kept, h[1..].to_vec());
    }

    #[test]
    fn unknown_cases_are_pruned_like_unknown_writes() {
        let unknown = |expected, new, a| {
            let mut o = cas(1, expected, new, CasResult::NotSwappedUnread, a, a + 1);
            o.outcome = Outcome::Unknown;
            o
        };
        let h = [
            // Nothing depends on 4: pruned.
            unknown(None, 4, 0),
            // 5 is read: kept.
            unknown(None, 5, 0),
            op(2, OpKind::Read(Some(5)), 4, 5, Outcome::Ok),
            // 6 is expected by a CAS (even an unknown one): kept.
            op(1, OpKind::Write(6), 2, 3, Outcome::Unknown),
            unknown(Some(6), 7, 6),
            // 8 is what a failed compare saw: kept.
            op(1, OpKind::Write(8), 2, 3, Outcome::Unknown),
            cas(3, Some(1), 9, CasResult::NotSwapped(Some(8)), 8, 9),
        ];
        let kept = prune_unseen_unknown_writes(&h);
        let mut expected = h[1..].to_vec();
        // 7 itself: nothing depends on it.
        expected.remove(3);
        assert_eq!(kept, expected);
    }

    #[test]
    fn a_failed_compare_that_did_not_read_keeps_unknown_writes() {
        // Valid only if the unknown write of 2 happened before the CAS,
        // though nothing names 2: pruning it would make a false violation.
        let h = [
            op(1, OpKind::Write(1), 0, 1, Outcome::Ok),
            op(1, OpKind::Write(2), 2, 3, Outcome::Unknown),
            cas(2, Some(1), 3, CasResult::NotSwappedUnread, 4, 5),
        ];
        assert_eq!(linearizability::check(&h), Ok(()));
        assert_eq!(prune_unseen_unknown_writes(&h), h.to_vec());
    }

    #[test]
    fn pruning_never_changes_the_verdict() {
        // Random small histories of one register with unknown writes and
        // CASes.
        let mut rng = SmallRng::seed_from_u64(11);
        let mut violations = 0;
        let mut pruned_some = 0;
        for _ in 0..2000 {
            let mut h = Vec::new();
            for i in 0..8u64 {
                let invoke = rng.random_range(0..20);
                let complete = invoke + rng.random_range(1..6);
                let outcome = match rng.random_range(0..3) {
                    0 => Outcome::Unknown,
                    _ => Outcome::Ok,
                };
                let value =
                    |rng: &mut SmallRng| rng.random_range(0..9u64).checked_sub(1).map(|v| v + 1);
                let kind = match rng.random_range(0..4) {
                    0 | 1 => OpKind::Write(i + 1),
                    2 => OpKind::Read(value(&mut rng)),
                    _ => {
                        let expected = value(&mut rng);
                        let current = value(&mut rng);
                        let result = match rng.random_range(0..5) {
                            0 | 1 => CasResult::Swapped,
                            2 | 3 => CasResult::NotSwapped(current),
                            _ => CasResult::NotSwappedUnread,
                        };
                        OpKind::Cas {
                            expected,
                            new: i + 1,
                            result,
                        }
                    }
                };
                h.push(op(i, kind, invoke, complete, outcome));
            }
            let full = linearizability::check(&h).is_ok();
            let kept = prune_unseen_unknown_writes(&h);
            pruned_some += usize::from(kept.len() < h.len());
            let pruned = linearizability::check(&kept).is_ok();
            assert_eq!(full, pruned, "{h:#?}");
            violations += usize::from(!full);
        }
        assert!(violations > 100, "the histories should not all be valid");
        assert!(pruned_some > 100, "pruning should have had work");
    }

    #[test]
    fn the_summary_counts_cas_outcomes() {
        let unknown = {
            let mut o = cas(1, None, 3, CasResult::NotSwappedUnread, 4, 5);
            o.outcome = Outcome::Unknown;
            o
        };
        let h = [
            op(1, OpKind::Write(1), 0, 1, Outcome::Ok),
            cas(1, Some(1), 2, CasResult::Swapped, 2, 3),
            cas(2, Some(1), 4, CasResult::NotSwapped(Some(2)), 4, 5),
            unknown,
            op(2, OpKind::Read(Some(2)), 6, 7, Outcome::Ok),
        ];
        assert_eq!(
            Summary::of(&h).to_string(),
            "5 operations (1 writes, 1 reads, 3 CAS; 4 ok, 0 failed, 1 unknown; CAS: 1 swapped, \
             1 compare failed, 1 unknown)"
        );
    }

    #[test]
    fn a_final_read_that_misses_an_acknowledged_write_is_a_lost_write() {
        let w = op(1, OpKind::Write(1), 0, 1, Outcome::Ok);
        let missing = op(FINAL_READER + 1, OpKind::Read(None), 2, 3, Outcome::Ok);
        assert_eq!(lost_write(&[w.clone(), missing.clone()]), Some("k".into()));
        let unknown = op(1, OpKind::Write(1), 0, 1, Outcome::Unknown);
        assert_eq!(lost_write(&[unknown, missing.clone()]), None);
        let found = op(FINAL_READER + 1, OpKind::Read(Some(1)), 2, 3, Outcome::Ok);
        assert_eq!(lost_write(&[w, found]), None);
        // A CAS that swapped is an acknowledged write too; one whose
        // compare failed is not.
        let swapped = cas(1, None, 1, CasResult::Swapped, 0, 1);
        assert_eq!(lost_write(&[swapped, missing.clone()]), Some("k".into()));
        let not_swapped = cas(1, Some(5), 1, CasResult::NotSwapped(None), 0, 1);
        assert_eq!(lost_write(&[not_swapped, missing]), None);
    }

    #[test]
    fn only_definite_refusals_count_as_failed_writes() {
        use workload::write_error_outcome as outcome;
        assert_eq!(
            outcome(&Status::invalid_argument(
                "etcdserver: request is too large"
            )),
            Outcome::Failed
        );
        assert_eq!(
            outcome(&Status::resource_exhausted("etcdserver: too many requests")),
            Outcome::Failed
        );
        assert_eq!(
            outcome(&Status::unavailable(
                "etcdserver: not leader (forwarded write not proposed)"
            )),
            Outcome::Failed
        );
        for unknown in [
            Status::unavailable("etcdserver: leader changed"),
            Status::deadline_exceeded("etcdserver: request timed out"),
            Status::unavailable("etcdserver: leader 2 unreachable: transport error"),
            Status::new(Code::Unknown, "connection reset"),
            Status::internal("h2 protocol error"),
        ] {
            assert_eq!(outcome(&unknown), Outcome::Unknown, "{unknown:?}");
        }
    }
}
