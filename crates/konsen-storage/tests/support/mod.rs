//! What the storage tests share: driving a store as a node loop does.

use konsen_core::storage::Storage;
use konsen_core::{Entry, EntryKind, HardState, Index, Term};
use konsen_storage::{ApplyOutcome, Command, RocksStore};

/// Appends `commands` to the log as committed entries of `term`, as a
/// driver does, and applies them; returns each entry's outcome.
pub fn apply_committed(
    store: &mut RocksStore,
    term: Term,
    commands: &[Command],
) -> Vec<ApplyOutcome> {
    let first = store.log.last() + 1;
    let entries: Vec<Entry> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| Entry {
            index: first + i as Index,
            term,
            kind: EntryKind::Normal,
            data: c.encode(),
        })
        .collect();
    let hs = HardState {
        term,
        vote: Some(1),
        commit: first + entries.len() as Index - 1,
    };
    store.log.append(Some(hs), &entries).expect("append");
    let results = store.kv.apply(&entries).expect("apply");
    results.into_iter().map(|r| r.outcome).collect()
}
