//! Runs the deterministic cluster simulator over many seeds.
//!
//! * `KONSEN_SIM_SEEDS=N` runs N seeds per test instead of the default.
//! * `KONSEN_SIM_SEED=S KONSEN_SIM_NODES=K` with the `replay` test reruns
//!   exactly one failing run, printing its statistics (it is `#[ignore]`d:
//!   run it with `-- --ignored`).

mod sim;

use std::time::Instant;

use konsen_core::NegativeControl;
use sim::{SimOptions, Stats, Violation, run_seed, seed_count};

/// Runs `count` seeds starting at `first` on clusters of `nodes`; panics
/// with the first violation (its seed, replay command and trace).
fn run_seeds(nodes: u64, first: u64, count: u64) {
    let started = Instant::now();
    let mut total = Stats::default();
    for seed in first..first + count {
        match run_seed(SimOptions {
            nodes,
            seed,
            negative_control: None,
            cas_bug: false,
        }) {
            Ok(s) => {
                total.proposals_accepted += s.proposals_accepted;
                total.entries_committed += s.entries_committed;
                total.reads_served += s.reads_served;
                total.crashes += s.crashes;
                total.partitions += s.partitions;
                total.transfers += s.transfers;
                total.compactions += s.compactions;
                total.snapshots_installed += s.snapshots_installed;
                total.cas_written += s.cas_written;
                total.cas_failed += s.cas_failed;
                total.unsynced_appends += s.unsynced_appends;
                total.unsynced_entries_lost += s.unsynced_entries_lost;
            }
            Err(v) => panic!("{v}"),
        }
    }
    eprintln!(
        "{count} seeds on {nodes} nodes in {:.1?}: no violation; {total:?}",
        started.elapsed()
    );
    // The checks above mean something only if the faults and the work
    // they are about actually happened (judged over a batch of seeds; a
    // handful of seeds may miss a kind).
    if count < 100 {
        return;
    }
    let Stats {
        entries_committed,
        reads_served,
        crashes,
        partitions,
        transfers,
        compactions,
        snapshots_installed,
        cas_written,
        cas_failed,
        unsynced_appends,
        unsynced_entries_lost,
        ..
    } = total;
    for (what, n) in [
        ("entries committed", entries_committed),
        ("reads served", reads_served),
        ("crashes", crashes),
        ("partitions", partitions),
        ("leader transfers", transfers),
        ("compactions", compactions),
        ("snapshot installs", snapshots_installed),
        ("compare-and-swaps that wrote", cas_written),
        ("compare-and-swaps that failed", cas_failed),
        ("unsynced leader appends", unsynced_appends),
        ("unsynced entries lost in a crash", unsynced_entries_lost),
    ] {
        assert!(n > 0, "{count} seeds on {nodes} nodes saw no {what}");
    }
}

// 2,000 seeds by default, split so the test runner spreads them over cores.
#[test]
fn three_nodes_a() {
    run_seeds(3, 0, seed_count(400));
}
#[test]
fn three_nodes_b() {
    run_seeds(3, 100_000, seed_count(400));
}
#[test]
fn five_nodes_a() {
    run_seeds(5, 200_000, seed_count(300));
}
#[test]
fn five_nodes_b() {
    run_seeds(5, 300_000, seed_count(300));
}
#[test]
fn seven_nodes_a() {
    run_seeds(7, 400_000, seed_count(300));
}
#[test]
fn seven_nodes_b() {
    run_seeds(7, 500_000, seed_count(300));
}

/// Replays one seed given by `KONSEN_SIM_SEED` (and `KONSEN_SIM_NODES`,
/// default 3). A tool rather than a check, so it runs only when asked for.
#[test]
#[ignore = "replays the seed in KONSEN_SIM_SEED; run with --ignored"]
fn replay() {
    let seed = std::env::var("KONSEN_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("set KONSEN_SIM_SEED to the seed to replay");
    let nodes = std::env::var("KONSEN_SIM_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    match run_seed(SimOptions {
        nodes,
        seed,
        negative_control: None,
        cas_bug: false,
    }) {
        Ok(stats) => eprintln!("seed {seed} on {nodes} nodes passed: {stats:?}"),
        Err(v) => panic!("{v}"),
    }
}

/// Runs seeds with one safety rule broken until the checker objects.
fn first_violation(control: NegativeControl, nodes: u64, seeds: u64) -> Option<Violation> {
    (0..seeds).find_map(|seed| {
        run_seed(SimOptions {
            nodes,
            seed,
            negative_control: Some(control),
            cas_bug: false,
        })
        .err()
    })
}

/// Runs seeds with `control` until the checker objects, and checks that it
/// objects to a broken safety property (not to something else).
fn expect_caught(control: NegativeControl, seeds: u64, what: &str) {
    let v = first_violation(control, 3, seeds)
        .unwrap_or_else(|| panic!("the simulator must detect {what} within {seeds} seeds"));
    eprintln!("caught as expected:\n{v}");
    assert!(
        v.message.contains("Leader Completeness")
            || v.message.contains("State Machine Safety")
            || v.message.contains("Log Matching")
            || v.message.contains("ReadIndex"),
        "unexpected violation: {v}"
    );
}

/// Negative control: granting votes without the up-to-date check (§5.4.1)
/// lets a node with a stale log win, and the checker must catch it.
#[test]
fn negative_control_vote_without_log_check_is_caught() {
    expect_caught(
        NegativeControl::VoteWithoutLogCheck,
        300,
        "votes granted without the log check",
    );
}

/// Negative control: a leader that counts its entries written without a
/// sync (`Config::lazy_sync_lag_max`) may commit an entry that only one
/// disk holds durably; a power loss then takes it, and the checker must
/// catch it.
#[test]
fn negative_control_count_unsynced_own_entries_is_caught() {
    expect_caught(
        NegativeControl::CountUnsyncedOwnEntries,
        2000,
        "a leader counting its unsynced entries",
    );
}

/// Negative control for State Machine Safety's state check: node 1 applies
/// compare-and-swaps without comparing, so it applies the same log as the
/// others but reaches another state. The checker must catch it, directly
/// or through a snapshot node 1 sends.
#[test]
fn negative_control_a_node_that_applies_cas_wrongly_is_caught() {
    let seeds = 20;
    let v = (0..seeds)
        .find_map(|seed| {
            run_seed(SimOptions {
                nodes: 3,
                seed,
                negative_control: None,
                cas_bug: true,
            })
            .err()
        })
        .unwrap_or_else(|| {
            panic!("the simulator must detect a wrong compare within {seeds} seeds")
        });
    eprintln!("caught as expected:\n{v}");
    assert!(
        v.message.contains("State Machine Safety") && v.message.contains("another state"),
        "unexpected violation: {v}"
    );
}
