//! Runs the storage conformance suite against [`MemStorage`], the storage
//! the simulator uses, so that the simulated disk keeps the same contract
//! as the real one (konsen-storage runs the same suite on RocksDB).

use konsen_core::storage::{MemStorage, conformance};

#[test]
fn mem_storage_passes_the_conformance_suite() {
    conformance::run_all(MemStorage::new);
}
