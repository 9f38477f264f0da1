//! The short version of the fault-injection suite, for CI: every scenario
//! of `cargo xtask chaos` for a few seconds each must keep the history
//! (puts, reads and compare-and-swaps; xtask fails a run in which no CAS
//! swapped) linearizable and recover within the bound; and the negative
//! control (the server's `unsafe_stale_reads`, which serves reads without
//! ReadIndex) must be caught by the checker, which shows the suite can
//! fail. Every run also watches through the faults (a watch per node and
//! a slow reader); the watch negative control (`unsafe_watch_ignore_gaps`,
//! a watch stream that skips what it fell behind on) must be caught by
//! the watch check.
//!
//! These run the xtask binary on the real `konsen-server`, taken from
//! `XTASK_TEST_BIN_DIR` (CI sets it to `$CARGO_TARGET_DIR/release`), else
//! `$CARGO_TARGET_DIR/release`, else the workspace's `target/release`; with
//! none holding the binaries, xtask builds them. Only 127.0.0.1; xtask
//! kills every node it starts, and bounds every wait.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// Seconds of faults per scenario in CI (eleven scenarios).
const SCENARIO_SECS: &str = "7";
/// Seconds of the negative control. Stale reads show up within the first
/// second (a follower applies a commit one heartbeat after the leader
/// acknowledged it), so this leaves a wide margin.
const NEGATIVE_CONTROL_SECS: &str = "8";

/// Where prebuilt `konsen-server` and `konsen-cli` are, if anywhere.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("XTASK_TEST_BIN_DIR") {
        return Some(PathBuf::from(dir));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("release");
    (dir.join("konsen-server").is_file() && dir.join("konsen-cli").is_file()).then_some(dir)
}

/// Runs `xtask chaos` with `args` and the binaries of [`bin_dir`]. Run
/// directories (kept when a run fails, as the negative control's does) go
/// to a temporary directory removed afterwards.
fn chaos(args: &[&str]) -> Output {
    let mut all = vec!["chaos".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    if let Some(dir) = bin_dir() {
        all.extend(["--bin-dir".into(), dir.display().to_string()]);
    }
    let tmp = tempfile::Builder::new()
        .prefix("konsen-chaos-test-")
        .tempdir()
        .expect("a temporary directory");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(&all)
        .env("TMPDIR", tmp.path())
        .output()
        .expect("running the xtask binary");
    eprintln!("xtask {} took {:?}", all.join(" "), started.elapsed());
    if !output.status.success() {
        // The report names node logs under this directory: keep them.
        eprintln!("kept {}", tmp.keep().display());
    }
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn every_scenario_stays_linearizable_and_recovers() {
    let output = chaos(&["--scenario", "all", "--duration", SCENARIO_SECS]);
    let shown = text(&output);
    assert!(output.status.success(), "chaos failed: {shown}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for scenario in [
        "kill-random",
        "kill-leader",
        "pause-random",
        "pause-leader",
        "rolling-restart",
        "partition-random",
        "partition-leader",
        "partition-one-way",
        "partition-bridge",
        "slow-links",
        "mixed",
    ] {
        assert!(
            stdout.contains(&format!("scenario {scenario}: OK")),
            "no verdict for {scenario}: {shown}"
        );
    }
    // Print the summary lines (seed, counts with the CAS outcomes, recovery
    // times) in the log.
    for line in stdout
        .lines()
        .filter(|l| l.contains(": OK") || l.contains("seed"))
    {
        eprintln!("{line}");
    }
}

#[test]
fn stale_reads_are_caught_by_the_checker() {
    let output = chaos(&[
        "--scenario",
        "pause-leader",
        "--duration",
        NEGATIVE_CONTROL_SECS,
        "--unsafe-stale-reads",
    ]);
    let shown = text(&output);
    assert!(
        !output.status.success(),
        "the negative control passed: stale reads went unnoticed: {shown}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("[chaos] VIOLATION: key"),
        "the negative control failed, but not with a linearizability violation: {shown}"
    );
    for line in stdout
        .lines()
        .filter(|l| l.contains("VIOLATION") || l.contains("seed"))
    {
        eprintln!("{line}");
    }
}

#[test]
fn watchers_that_skip_what_they_missed_are_caught_by_the_watch_check() {
    let output = chaos(&[
        "--scenario",
        "kill-random",
        "--duration",
        NEGATIVE_CONTROL_SECS,
        "--unsafe-watch-ignore-gaps",
    ]);
    let shown = text(&output);
    assert!(
        !output.status.success(),
        "the watch negative control passed: lost events went unnoticed: {shown}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("[chaos] WATCH VIOLATION: "),
        "the watch negative control failed, but not with a watch violation: {shown}"
    );
    for line in stdout
        .lines()
        .filter(|l| l.contains("VIOLATION") || l.contains("seed"))
    {
        eprintln!("{line}");
    }
}
