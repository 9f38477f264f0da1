//! Runs the storage conformance suite against [`MemStorage`], the storage
//! the simulator uses, so that the simulated disk keeps the same contract
//! as the real one (konsen-storage runs the same suite on RocksDB).

use konsen_core::storage::{MemStorage, Storage, conformance};
use konsen_core::{Entry, EntryKind, HardState};

#[test]
fn mem_storage_passes_the_conformance_suite() {
    conformance::run_all(MemStorage::new);
}

fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 2,
        kind: EntryKind::Normal,
        data: format!("e{index}").into_bytes().into(),
    }
}

/// The simulator's power loss: what was written unsynced is gone, what a
/// synced write covered is not.
#[test]
fn a_power_loss_drops_what_no_synced_write_covered() {
    let mut disk = MemStorage::new();
    let hs = |commit| HardState {
        term: 2,
        vote: Some(1),
        commit,
    };
    disk.append(Some(hs(1)), &[entry(1), entry(2)]).unwrap();
    disk.append_unsynced(Some(hs(2)), &[entry(3), entry(4)])
        .unwrap();
    disk.store_commit(hs(4)).unwrap();
    disk.lose_unsynced();
    let lost = disk.load().unwrap();
    assert_eq!(
        lost.entries,
        vec![entry(1), entry(2)],
        "entries 3 and 4 were never synced"
    );
    assert_eq!(lost.hard_state, hs(1), "nor was any commit index after 1");

    disk.append_unsynced(None, &[entry(3), entry(4)]).unwrap();
    disk.append(Some(hs(4)), &[entry(5)]).unwrap();
    disk.lose_unsynced();
    let kept = disk.load().unwrap();
    assert_eq!(
        kept.entries,
        (1..=5).map(entry).collect::<Vec<_>>(),
        "the synced append of 5 made 3 and 4 durable too"
    );
    assert_eq!(kept.hard_state, hs(4));
}
