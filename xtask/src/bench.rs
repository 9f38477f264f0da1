//! `cargo xtask bench`: benchmarks, run through cargo with their knobs
//! passed as environment variables.

use anyhow::Result;

use crate::cargo;

/// `bench core`: committed entries per second of the Raft core alone,
/// 3 nodes in one process, for `secs` seconds with `batch` proposals per
/// round.
pub fn core(secs: u64, batch: u64) -> Result<()> {
    cargo::run(
        &["bench", "-p", "konsen-core", "--bench", "core"],
        &[
            ("KONSEN_BENCH_SECS", secs.to_string()),
            ("KONSEN_BENCH_BATCH", batch.to_string()),
        ],
    )
}
