//! Project automation, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`). One place for the scripts a project accumulates,
//! written in Rust so they run wherever cargo does.
//!
//! Commands:
//! * `dist`: release binaries and one folder per node of `conf/cluster.yml`
//!   (config, `bootstrap.sh`, systemd unit), ready to copy to machines.
//! * `local`: a cluster of N nodes on 127.0.0.1, logs in one terminal,
//!   stopped with Ctrl-C.
//! * `bench core`: throughput of the Raft core alone (3 nodes in one
//!   process, in-memory logs).
//! * `bench vs-etcd`: the same load against etcd and konsen clusters on
//!   this machine, side by side.
//! * `chaos`: the fault-injection suite: real nodes, real clients, killed
//!   and paused processes, partitions, and a linearizability check of the
//!   history.
//!
//! # Layout
//!
//! * `cluster_file.rs`: reading and checking the cluster file.
//! * `cargo.rs`: running cargo, the target directory, the release build.
//! * `dist.rs`, `local.rs`, `bench.rs`, `vs_etcd.rs`: one command each.
//! * `linearizability.rs`: the history checker of the fault-injection suite.
//! * `chaos/`: the fault-injection suite (`cargo xtask chaos`).

mod bench;
mod cargo;
mod chaos;
mod cluster_file;
mod dist;
mod linearizability;
mod local;
mod vs_etcd;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "konsen project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Builds release binaries and writes one folder per node of the
    /// cluster file (binaries, konsen.yml, bootstrap.sh, konsen.service).
    Dist {
        /// The cluster file. Default: conf/cluster.yml of the workspace.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the node folders go. Default: output/ in the workspace.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Take konsen-server and konsen-cli from DIR instead of building.
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Where a node folder's files will live on its machine (the paths
        /// in konsen.service).
        #[arg(long, default_value = dist::INSTALL_DIR_DEFAULT)]
        install_dir: String,
    },
    /// Runs a cluster on 127.0.0.1 until Ctrl-C, logs prefixed by node.
    Local {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Node i listens on base-port + i - 1.
        #[arg(long, default_value_t = 10001)]
        base_port: u16,
        /// Take konsen-server and konsen-cli from DIR instead of building.
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Where configs and data go (emptied first). Default:
        /// konsen-local/ in the target directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Fault injection: runs a cluster on 127.0.0.1 under client load
    /// while killing, pausing, restarting and partitioning nodes, then
    /// checks that the history is linearizable and the cluster recovers.
    Chaos(chaos::Options),
    /// Runs a benchmark.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Committed entries per second of the Raft core alone.
    Core {
        /// Seconds to run.
        #[arg(long, default_value_t = 3)]
        secs: u64,
        /// Proposals per round (batch size).
        #[arg(long, default_value_t = 1024)]
        batch: u64,
    },
    /// The same load against 3-node etcd and konsen clusters on this
    /// machine; prints konsen/etcd ratios.
    VsEtcd {
        /// Seconds per row.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Run both clusters this many times, alternating, and report
        /// medians (one run on a small shared machine swings 10-25 %).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
        rounds: u64,
        /// Take konsen-server and konsen-bench from DIR instead of building.
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Instead of the rows: PUTS puts to 1,000 keys on each cluster
        /// (auto-compaction keeping 10,000 revisions on both), then each
        /// server's RSS and data dir size on disk.
        #[arg(long, value_name = "PUTS")]
        footprint: Option<u64>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Dist {
            config,
            out,
            bin_dir,
            install_dir,
        } => {
            let root = cargo::workspace_root();
            dist::run(&dist::Options {
                config: config.unwrap_or_else(|| root.join("conf/cluster.yml")),
                out: out.unwrap_or_else(|| root.join("output")),
                bin_dir,
                install_dir,
            })
        }
        Cmd::Local {
            nodes,
            base_port,
            bin_dir,
            dir,
        } => local::run(&local::Options {
            nodes,
            base_port,
            bin_dir,
            dir,
        }),
        Cmd::Chaos(options) => chaos::run(&options),
        Cmd::Bench {
            which: Bench::Core { secs, batch },
        } => bench::core(secs, batch),
        Cmd::Bench {
            which:
                Bench::VsEtcd {
                    duration,
                    rounds,
                    bin_dir,
                    footprint,
                },
        } => vs_etcd::run(&vs_etcd::Options {
            duration_secs: duration,
            rounds: rounds as usize,
            bin_dir,
            footprint_puts: footprint,
        }),
    }
}
