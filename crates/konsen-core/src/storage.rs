//! The contract between the core and stable storage, and an in-memory
//! implementation for tests and the simulator.
//!
//! The core never calls storage itself: the driver takes a [`crate::Ready`],
//! writes its `hard_state` and `entries` through [`Storage::append`], and on
//! restart rebuilds the node from [`Storage::load`]. konsen-storage
//! implements this trait on RocksDB; [`MemStorage`] implements it in memory
//! and is what the simulator's "disk" is. Both pass the same conformance
//! suite ([`conformance`]).

pub mod conformance;

use crate::types::{Entry, HardState, Index, Term};

/// What a node's stable storage holds about the Raft log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredLog {
    pub hard_state: HardState,
    /// The last index and term purged behind a snapshot (0, 0 if none).
    pub purged_index: Index,
    pub purged_term: Term,
    /// Every entry after `purged_index`, contiguous.
    pub entries: Vec<Entry>,
}

/// Durable storage of the hard state and the log.
pub trait Storage {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Durably stores `hard_state` (if given) and `entries`: when this
    /// returns, both survive a crash. An entry at an index already stored
    /// replaces it and drops every stored entry after it. `entries` are
    /// contiguous and start at most one past the last stored index.
    fn append(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), Self::Error>;

    /// Stores `entries`, which start right after the last stored index,
    /// and `hard_state` (if given: only its commit index may differ from
    /// the stored one), without waiting for the disk: they may be lost in a
    /// crash, until the next synced write makes them durable with it. A
    /// leader writes its own new entries this way while its followers keep
    /// up ([`crate::Ready::must_sync`]); it counts them towards commitment
    /// only once a synced write covers them.
    fn append_unsynced(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), Self::Error>;

    /// Stores `hard_state`, whose term and vote are the stored ones (only
    /// the commit index moved), without waiting for the disk: it may be
    /// lost in a crash until the next synced write. Safety does not need
    /// the commit index on disk (a restarted node learns it again from the
    /// leader); the driver uses this when a `Ready` says `!must_sync`.
    fn store_commit(&mut self, hard_state: HardState) -> Result<(), Self::Error>;

    /// Everything stored, for restarting a node.
    fn load(&self) -> Result<StoredLog, Self::Error>;

    /// Entries in `[lo, hi]` (inclusive), which must be stored.
    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, Self::Error>;

    /// The first stored index (purged index + 1).
    fn first_index(&self) -> Result<Index, Self::Error>;

    /// The last stored index (the purged index if no entry is stored).
    fn last_index(&self) -> Result<Index, Self::Error>;

    /// Drops entries up to and including `index` (behind a snapshot).
    fn purge(&mut self, index: Index) -> Result<(), Self::Error>;
}

/// Why the in-memory storage refused a call (the same misuse the RocksDB
/// store refuses).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemStorageError {
    #[error(
        "entries must be contiguous and start at most one past the last index {last}: got {first}"
    )]
    NotContiguous { last: Index, first: Index },
    #[error("store_commit may only move the commit index, not the term or vote")]
    NotCommitOnly,
    #[error("range [{lo}, {hi}] is outside the stored log [{first}, {last}]")]
    OutOfRange {
        lo: Index,
        hi: Index,
        first: Index,
        last: Index,
    },
}

/// Storage in memory: survives a simulated crash of the node that uses it,
/// not of the process.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    log: StoredLog,
    /// The commit index as of the last synced write: what a power loss
    /// leaves ([`MemStorage::lose_unsynced`]).
    synced_commit: Index,
    /// The last index as of the last synced write: entries after it were
    /// written with [`Storage::append_unsynced`] since, and a power loss
    /// drops them.
    synced_last: Index,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn last(&self) -> Index {
        self.log.purged_index + self.log.entries.len() as Index
    }

    /// Replaces the whole log by a snapshot ending at `(index, term)`.
    pub fn install_snapshot(&mut self, index: Index, term: Term) {
        self.log.entries.clear();
        self.log.purged_index = index;
        self.log.purged_term = term;
        self.log.hard_state.commit = self.log.hard_state.commit.max(index);
        self.synced();
    }

    /// What a power loss does: writes not yet synced (entries written with
    /// [`Storage::append_unsynced`], a commit index stored with
    /// [`Storage::store_commit`]) are gone.
    /// Returns the number of entries lost.
    pub fn lose_unsynced(&mut self) -> usize {
        self.log.hard_state.commit = self.synced_commit;
        let keep = (self.synced_last - self.log.purged_index) as usize;
        let lost = self.log.entries.len().saturating_sub(keep);
        self.log.entries.truncate(keep);
        lost
    }

    /// A synced write makes everything written before it durable too.
    fn synced(&mut self) {
        self.synced_commit = self.log.hard_state.commit;
        self.synced_last = self.last();
    }

    /// Checks that `entries` are contiguous and start at most one past the
    /// last stored index (exactly one past it if `extend_only`).
    fn check_entries(&self, entries: &[Entry], extend_only: bool) -> Result<(), MemStorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let last = self.last();
        let contiguous = entries.windows(2).all(|w| w[1].index == w[0].index + 1);
        let replaces = first.index <= last;
        if first.index > last + 1
            || first.index <= self.log.purged_index
            || !contiguous
            || (extend_only && replaces)
        {
            return Err(MemStorageError::NotContiguous {
                last,
                first: first.index,
            });
        }
        Ok(())
    }

    /// Checks that `hard_state` moves only the commit index.
    fn commit_only(&self, hard_state: &HardState) -> Result<(), MemStorageError> {
        let stored = &self.log.hard_state;
        if (hard_state.term, hard_state.vote) != (stored.term, stored.vote) {
            return Err(MemStorageError::NotCommitOnly);
        }
        Ok(())
    }
}

impl Storage for MemStorage {
    type Error = MemStorageError;

    fn append(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), Self::Error> {
        self.check_entries(entries, false)?;
        if let Some(first) = entries.first() {
            let keep = (first.index - self.log.purged_index - 1) as usize;
            self.log.entries.truncate(keep);
            self.log.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.log.hard_state = hs;
        }
        self.synced();
        Ok(())
    }

    fn append_unsynced(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), Self::Error> {
        if let Some(hs) = &hard_state {
            self.commit_only(hs)?;
        }
        self.check_entries(entries, true)?;
        self.log.entries.extend_from_slice(entries);
        if let Some(hs) = hard_state {
            self.log.hard_state.commit = hs.commit;
        }
        Ok(())
    }

    fn store_commit(&mut self, hard_state: HardState) -> Result<(), Self::Error> {
        self.commit_only(&hard_state)?;
        self.log.hard_state.commit = hard_state.commit;
        Ok(())
    }

    fn load(&self) -> Result<StoredLog, Self::Error> {
        Ok(self.log.clone())
    }

    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, Self::Error> {
        let (first, last) = (self.log.purged_index + 1, self.last());
        if lo < first || hi > last || lo > hi {
            return Err(MemStorageError::OutOfRange {
                lo,
                hi,
                first,
                last,
            });
        }
        let base = self.log.purged_index + 1;
        Ok(self.log.entries[(lo - base) as usize..=(hi - base) as usize].to_vec())
    }

    fn first_index(&self) -> Result<Index, Self::Error> {
        Ok(self.log.purged_index + 1)
    }

    fn last_index(&self) -> Result<Index, Self::Error> {
        Ok(self.last())
    }

    fn purge(&mut self, index: Index) -> Result<(), Self::Error> {
        if index <= self.log.purged_index {
            return Ok(());
        }
        let last = self.last();
        if index > last {
            return Err(MemStorageError::OutOfRange {
                lo: index,
                hi: index,
                first: self.log.purged_index + 1,
                last,
            });
        }
        let drop = (index - self.log.purged_index) as usize;
        let term = self.log.entries[drop - 1].term;
        self.log.entries.drain(..drop);
        self.log.purged_index = index;
        self.log.purged_term = term;
        self.synced();
        Ok(())
    }
}
