//! Project automation, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`). One place for the scripts a project accumulates,
//! written in Rust so they run wherever cargo does.
//!
//! Commands:
//! * `bench core`: throughput of the Raft core alone (3 nodes in one
//!   process, in-memory logs).

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "konsen project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Bench {
            which: Bench::Core { secs, batch },
        } => cargo(
            &["bench", "-p", "konsen-core", "--bench", "core"],
            &[("KONSEN_BENCH_SECS", secs), ("KONSEN_BENCH_BATCH", batch)],
        ),
    }
}

/// Runs cargo with `args`, failing if it fails.
fn cargo(args: &[&str], env: &[(&str, u64)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v.to_string());
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {cargo} {}", args.join(" ")))?;
    if !status.success() {
        bail!("{cargo} {} failed: {status}", args.join(" "));
    }
    Ok(())
}
