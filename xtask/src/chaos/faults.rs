//! The fault schedule: which faults a scenario injects, when, and on which
//! node, drawn from one seeded generator, and the timeline of what was
//! done (printed after every run). The seed fixes the schedule, not the
//! timing: the nodes and clients run in real time.
//!
//! Faults come one at a time; each ends by undoing itself (a killed node
//! is restarted, a paused one resumed, a partition healed) after a random
//! while, so the cluster spends part of the run degraded and part of it
//! whole; the runner heals whatever is left when the schedule ends.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use rand::Rng;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::proxy::Shaping;
use super::workload::Recorder;

/// How long a restarted node gets to serve again during a rolling restart.
const SERVE_WAIT: Duration = Duration::from_secs(15);
/// How long the schedule looks for the leader before it picks any node.
const LEADER_WAIT: Duration = Duration::from_secs(3);

/// One kind of fault, or a mix of all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// SIGKILL a random node, restart it after a while.
    KillRandom,
    /// SIGKILL the leader, restart it after a while.
    KillLeader,
    /// SIGSTOP a random node, SIGCONT it after a while.
    PauseRandom,
    /// SIGSTOP the leader, SIGCONT it after a while.
    PauseLeader,
    /// SIGTERM, restart and wait for every node in turn.
    RollingRestart,
    /// Cut a random node off from its peers, heal after a while.
    PartitionRandom,
    /// Cut the leader off from its peers, heal after a while.
    PartitionLeader,
    /// Cut every link out of the leader, one way only: it still hears its
    /// peers, they no longer hear it. Heal after a while.
    PartitionOneWay,
    /// Split the other nodes into two halves that cannot reach each other,
    /// with one node (the bridge) still reaching both. Heal after a while.
    PartitionBridge,
    /// Make about half of the directed peer links slow (each chunk delayed
    /// up to 10–150 ms) and lossy (a connection dropped, with what it
    /// carried, every 0–3 % of chunks). Heal after a while.
    SlowLinks,
    /// Any of the above, drawn each round.
    Mixed,
}

impl Scenario {
    /// Every scenario, in the order `--scenario all` runs them.
    pub const ALL: [Scenario; 11] = [
        Scenario::KillRandom,
        Scenario::KillLeader,
        Scenario::PauseRandom,
        Scenario::PauseLeader,
        Scenario::RollingRestart,
        Scenario::PartitionRandom,
        Scenario::PartitionLeader,
        Scenario::PartitionOneWay,
        Scenario::PartitionBridge,
        Scenario::SlowLinks,
        Scenario::Mixed,
    ];

    /// Whether the nodes need the partition proxies.
    pub fn partitions(self) -> bool {
        matches!(
            self,
            Scenario::PartitionRandom
                | Scenario::PartitionLeader
                | Scenario::PartitionOneWay
                | Scenario::PartitionBridge
                | Scenario::SlowLinks
                | Scenario::Mixed
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillRandom => "kill-random",
            Scenario::KillLeader => "kill-leader",
            Scenario::PauseRandom => "pause-random",
            Scenario::PauseLeader => "pause-leader",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::PartitionRandom => "partition-random",
            Scenario::PartitionLeader => "partition-leader",
            Scenario::PartitionOneWay => "partition-one-way",
            Scenario::PartitionBridge => "partition-bridge",
            Scenario::SlowLinks => "slow-links",
            Scenario::Mixed => "mixed",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Scenario> {
        match Scenario::ALL.iter().find(|sc| sc.name() == s) {
            Some(sc) => Ok(*sc),
            None => {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                bail!(
                    "unknown scenario {s:?}: one of {}, or all",
                    names.join(", ")
                )
            }
        }
    }
}

/// What was done and when (ns on the history's clock).
#[derive(Debug, Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<(u64, String)>>>);

impl Timeline {
    pub fn note(&self, recorder: &Recorder, what: impl Into<String>) {
        let what = what.into();
        let at = recorder.now();
        self.0.lock().expect("timeline lock").push((at, what));
    }

    /// Prints every entry, times in ms since the recorder's start.
    pub fn print(&self, recorder: &Recorder) {
        println!(
            "[chaos] fault timeline (ms since the clients started, at Unix time {:.3} s):",
            recorder.start_unix_secs
        );
        for (at, what) in self.entries() {
            println!("    {:>10.3}  {what}", at as f64 / 1e6);
        }
    }

    pub fn entries(&self) -> Vec<(u64, String)> {
        self.0.lock().expect("timeline lock").clone()
    }

    /// How many faults were injected (the entries marked FAULT).
    pub fn faults(&self) -> usize {
        self.entries()
            .iter()
            .filter(|(_, w)| w.starts_with("FAULT"))
            .count()
    }
}

/// Injects `scenario`'s faults until `until`. Every fault is undone before
/// this returns, except when it fails.
pub async fn run(
    scenario: Scenario,
    cluster: &mut Cluster,
    rng: &mut SmallRng,
    until: Instant,
    recorder: &Recorder,
    timeline: &Timeline,
) -> Result<()> {
    loop {
        // A quiet spell, so that clients also see the whole cluster.
        let quiet = Duration::from_millis(rng.random_range(500..1500));
        if Instant::now() + quiet >= until {
            tokio::time::sleep_until(until).await;
            return Ok(());
        }
        tokio::time::sleep(quiet).await;
        let this = match scenario {
            Scenario::Mixed => Scenario::ALL[rng.random_range(0..Scenario::ALL.len() - 1)],
            other => other,
        };
        inject(this, cluster, rng, recorder, timeline).await?;
        if let Some(crash) = cluster.crashed() {
            bail!("{crash}");
        }
    }
}

/// One round of fault `scenario` (not `Mixed`), undone before returning.
async fn inject(
    scenario: Scenario,
    cluster: &mut Cluster,
    rng: &mut SmallRng,
    recorder: &Recorder,
    timeline: &Timeline,
) -> Result<()> {
    let n = cluster.ids().len() as u64;
    let random = |rng: &mut SmallRng| rng.random_range(1..=n);
    let note = |what: String| timeline.note(recorder, what);
    let pick_leader = async |rng: &mut SmallRng, cluster: &Cluster| match cluster
        .wait_for_leader(LEADER_WAIT)
        .await
    {
        Ok(leader) => (leader, "leader"),
        Err(_) => (random(rng), "random (no leader found)"),
    };
    match scenario {
        Scenario::KillRandom | Scenario::KillLeader => {
            let (id, which) = if scenario == Scenario::KillLeader {
                pick_leader(rng, cluster).await
            } else {
                (random(rng), "random")
            };
            cluster.kill_node(id)?;
            note(format!("FAULT SIGKILL node {id} ({which})"));
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
            cluster.start_node(id)?;
            note(format!("restart node {id}"));
        }
        Scenario::PauseRandom | Scenario::PauseLeader => {
            let (id, which) = if scenario == Scenario::PauseLeader {
                pick_leader(rng, cluster).await
            } else {
                (random(rng), "random")
            };
            cluster.pause_node(id)?;
            note(format!("FAULT SIGSTOP node {id} ({which})"));
            tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
            cluster.resume_node(id)?;
            note(format!("SIGCONT node {id}"));
        }
        Scenario::RollingRestart => {
            note("FAULT rolling restart begins".into());
            for id in cluster.ids() {
                let clean = cluster.terminate_node(id).await?;
                note(format!(
                    "SIGTERM node {id} ({})",
                    if clean {
                        "exited"
                    } else {
                        "killed after grace"
                    }
                ));
                cluster.start_node(id)?;
                note(format!("restart node {id}"));
                cluster.wait_serving(id, SERVE_WAIT).await?;
                note(format!("node {id} serves again"));
            }
        }
        Scenario::PartitionRandom | Scenario::PartitionLeader => {
            let (id, which) = if scenario == Scenario::PartitionLeader {
                pick_leader(rng, cluster).await
            } else {
                (random(rng), "random")
            };
            cluster.isolate(id)?;
            note(format!(
                "FAULT partition: node {id} ({which}) cut off from its peers"
            ));
            tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
            note(format!("before healing: {}", cluster.views().await));
            cluster.heal_network();
            note(format!("partition of node {id} healed"));
        }
        Scenario::PartitionOneWay => {
            let (id, which) = pick_leader(rng, cluster).await;
            let out: Vec<(u64, u64)> = cluster
                .ids()
                .into_iter()
                .filter(|&p| p != id)
                .map(|p| (id, p))
                .collect();
            cluster.cut_links(&out)?;
            note(format!(
                "FAULT one-way partition: node {id} ({which}) hears its peers, they do not hear it"
            ));
            tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
            note(format!("before healing: {}", cluster.views().await));
            cluster.heal_network();
            note(format!("one-way partition of node {id} healed"));
        }
        Scenario::PartitionBridge => {
            let mut ids = cluster.ids();
            let bridge = ids.remove(rng.random_range(0..ids.len()));
            // The others, shuffled, split in two halves.
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.random_range(0..=i));
            }
            let (a, b) = ids.split_at(ids.len() / 2);
            let mut cuts = Vec::new();
            for &x in a {
                for &y in b {
                    cuts.push((x, y));
                    cuts.push((y, x));
                }
            }
            cluster.cut_links(&cuts)?;
            note(format!(
                "FAULT bridge partition: {a:?} and {b:?} cannot reach each other, node {bridge} reaches both"
            ));
            tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
            note(format!("before healing: {}", cluster.views().await));
            cluster.heal_network();
            note("bridge partition healed".to_string());
        }
        Scenario::SlowLinks => {
            let mut shaped = Vec::new();
            for from in cluster.ids() {
                for to in cluster.ids() {
                    if from == to || !rng.random_bool(0.5) {
                        continue;
                    }
                    let shaping = Shaping {
                        delay_ms_max: rng.random_range(10..=150),
                        drop_per_mille: rng.random_range(0..=30),
                    };
                    cluster.shape_link(from, to, shaping)?;
                    shaped.push(format!(
                        "{from}->{to} (delay <= {} ms, drop {}‰)",
                        shaping.delay_ms_max, shaping.drop_per_mille
                    ));
                }
            }
            note(format!("FAULT slow, lossy links: {}", shaped.join(", ")));
            tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
            note(format!("before healing: {}", cluster.views().await));
            cluster.heal_network();
            note("slow links healed".to_string());
        }
        Scenario::Mixed => unreachable!("mixed is resolved by run"),
    }
    Ok(())
}
