//! Auto-compaction (etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention`): on the leader, a task that proposes
//! `Compact` through the log like a client's compaction, so every node
//! drops the same history at the same revision.
//!
//! * `revision` mode keeps at least `retention` revisions: once twice as
//!   many are kept, it compacts to `current - retention`. The history
//!   then never holds more than about twice the retention (plus what is
//!   written within one check), and each compaction's scan is amortized
//!   over the revisions it drops.
//! * `periodic` mode samples the revision every tenth of the retention
//!   and compacts to the newest sample at least `retention` old, as etcd
//!   does.
//!
//! Only the leader proposes; a follower's task only watches. A proposal
//! that fails (a leader change, another compaction first) is logged and
//! tried again at the next check.

use std::collections::VecDeque;
use std::time::Duration;

use konsen_core::Role;
use konsen_rpc::convert::WriteResult;
use konsen_storage::Command;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::periodic::Periodic;
use crate::services::Shared;
use crate::settings::AutoCompaction;

/// How often `revision` mode looks at the revision.
const REVISION_CHECK: Duration = Duration::from_millis(100);
/// The samples `periodic` mode keeps: one retention's worth, and a spare.
const SAMPLES_MAX: usize = 12;

/// Runs until `shutdown` turns true.
pub async fn run(shared: Shared, shutdown: watch::Receiver<bool>) {
    let mode = shared.settings.auto_compaction;
    let check = match mode {
        AutoCompaction::Off => return,
        AutoCompaction::Revisions(_) => REVISION_CHECK,
        AutoCompaction::Periodic(retention) => (retention / 10).max(shared.settings.tick),
    };
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut periodic = Periodic::new(check, shutdown);
    while periodic.tick().await {
        let Ok((current, compacted)) = shared.reader.revisions() else {
            continue;
        };
        let target = match mode {
            AutoCompaction::Off => return,
            AutoCompaction::Revisions(retention) => {
                (current - compacted >= 2 * retention).then_some(current - retention)
            }
            AutoCompaction::Periodic(retention) => {
                let now = Instant::now();
                samples.push_back((now, current));
                while samples.len() > SAMPLES_MAX {
                    samples.pop_front();
                }
                samples
                    .iter()
                    .rev()
                    .find(|(at, _)| now.duration_since(*at) >= retention)
                    .map(|&(_, rev)| rev)
                    .filter(|&rev| rev > compacted)
            }
        };
        let Some(revision) = target else { continue };
        if shared.node.status().role != Role::Leader {
            continue;
        }
        match shared.write(Command::Compact { revision }).await {
            Ok(outcome) => match outcome.result {
                WriteResult::Compact(_) => {
                    info!(revision, current, "auto-compaction: history compacted")
                }
                other => warn!(revision, "auto-compaction refused: {other:?}"),
            },
            Err(status) => warn!(revision, "auto-compaction failed: {}", status.message()),
        }
    }
}
