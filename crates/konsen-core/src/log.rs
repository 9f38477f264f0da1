//! The in-memory view of the Raft log: which entries exist, which of them
//! the driver has persisted, which are committed and which were handed out
//! to be applied.
//!
//! The core keeps the log tail since the last compaction point in memory.
//! The driver persists what [`crate::Ready::entries`] hands it and reloads
//! it with [`RaftLog::restore`] after a restart; purging a prefix behind a
//! snapshot ([`RaftLog::compact`]) bounds the memory.

use std::collections::VecDeque;

use crate::types::{Entry, Index, Term};

/// The log, its persistence frontier, and the commit and apply positions.
///
/// Invariants (checked by [`RaftLog::check`] in tests):
/// `offset <= applied <= committed <= last_index()` and
/// `offset <= stable <= last_index()`, and the entries are contiguous from
/// `offset + 1`.
#[derive(Debug, Clone)]
pub struct RaftLog {
    /// The index just before the first entry held (the compaction point; 0
    /// for a log that was never compacted).
    offset: Index,
    /// The term of the entry at `offset` (0 when `offset` is 0).
    offset_term: Term,
    entries: VecDeque<Entry>,
    /// Entries up to here are on the driver's stable storage.
    stable: Index,
    /// Entries up to here are known committed.
    committed: Index,
    /// Entries up to here were handed out to be applied.
    applied: Index,
}

impl RaftLog {
    /// An empty log.
    pub fn new() -> Self {
        RaftLog {
            offset: 0,
            offset_term: 0,
            entries: VecDeque::new(),
            stable: 0,
            committed: 0,
            applied: 0,
        }
    }

    /// A log restored from stable storage: the compaction point, the entries
    /// after it, and the commit and applied positions. The caller validated
    /// contiguity (see `RawNode::restore`).
    pub fn restore(
        offset: Index,
        offset_term: Term,
        entries: Vec<Entry>,
        committed: Index,
        applied: Index,
    ) -> Self {
        let mut log = RaftLog {
            offset,
            offset_term,
            entries: entries.into(),
            stable: 0,
            committed,
            applied: applied.max(offset),
        };
        log.stable = log.last_index();
        log.committed = committed.max(offset);
        log
    }

    pub fn first_index(&self) -> Index {
        self.offset + 1
    }

    pub fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.offset_term, |e| e.term)
    }

    pub fn committed(&self) -> Index {
        self.committed
    }

    pub fn applied(&self) -> Index {
        self.applied
    }

    pub fn stable(&self) -> Index {
        self.stable
    }

    /// The compaction point: entries at or below it are gone from memory.
    pub fn offset(&self) -> Index {
        self.offset
    }

    /// The term of the entry at `index`, if the log still knows it (the
    /// compaction point's term is known).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        if index < self.offset || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.offset - 1) as usize].term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.offset || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.offset - 1) as usize])
    }

    /// Entries in `[lo, hi]` up to `bytes_max` bytes, always at least one
    /// when the range is non-empty. `lo` must be above the compaction point.
    pub fn slice(&self, lo: Index, hi: Index, bytes_max: usize) -> Vec<Entry> {
        assert!(
            lo > self.offset,
            "log slice invariant: lo {lo} must be above compaction point {}",
            self.offset
        );
        let hi = hi.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in lo..=hi {
            let entry = &self.entries[(index - self.offset - 1) as usize];
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Whether the entries `lo..=hi` hold more than `bytes_max` bytes (more
    /// than one append message carries). Stops counting once they do.
    pub fn exceeds_bytes(&self, lo: Index, hi: Index, bytes_max: usize) -> bool {
        let hi = hi.min(self.last_index());
        let mut bytes = 0;
        for index in lo.max(self.offset + 1)..=hi {
            bytes += self.entries[(index - self.offset - 1) as usize].size_bytes();
            if bytes > bytes_max {
                return true;
            }
        }
        false
    }

    /// Whether a log ending at `(last_index, last_term)` is at least as up to
    /// date as this one (§5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Whether this log has an entry at `index` with `term`.
    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Appends entries the leader creates; they directly follow the last one.
    pub fn append_new(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "log contiguity invariant: appended entry must follow the last one"
        );
        self.entries.push_back(entry);
    }

    /// Merges entries received from the leader, which follow a position the
    /// caller checked matches. Entries already present with the same term
    /// are skipped; at the first conflict, the suffix is replaced. Returns
    /// the index of the last entry now matching the leader.
    pub fn merge(&mut self, entries: Vec<Entry>) -> Index {
        let mut last = 0;
        for entry in entries {
            last = entry.index;
            if entry.index <= self.offset {
                // Already compacted, hence committed and identical.
                continue;
            }
            match self.term(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    assert!(
                        entry.index > self.committed,
                        "committed-entry invariant: leader sent entry {} (term {}) conflicting with \
                         committed index {}",
                        entry.index,
                        entry.term,
                        self.committed
                    );
                    self.truncate_after(entry.index - 1);
                    self.entries.push_back(entry);
                }
                None => {
                    assert_eq!(
                        entry.index,
                        self.last_index() + 1,
                        "log contiguity invariant: received entries must follow a matched position"
                    );
                    self.entries.push_back(entry);
                }
            }
        }
        last
    }

    fn truncate_after(&mut self, index: Index) {
        let keep = (index - self.offset) as usize;
        self.entries.truncate(keep);
        self.stable = self.stable.min(index);
    }

    /// Entries not yet handed to stable storage.
    pub fn unstable_entries(&self) -> Vec<Entry> {
        if self.stable >= self.last_index() {
            return Vec::new();
        }
        let start = (self.stable - self.offset) as usize;
        self.entries.range(start..).cloned().collect()
    }

    /// The driver persisted entries up to `(index, term)`. Ignored if the
    /// entry has since been replaced.
    pub fn stable_to(&mut self, index: Index, term: Term) {
        if self.matches(index, term) && index > self.stable {
            self.stable = index;
        }
    }

    /// Raises the commit index. The caller has established that `index` is
    /// committed.
    pub fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit invariant: commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Committed entries not yet handed out, up to `bytes_max` bytes.
    pub fn next_committed(&self, bytes_max: usize) -> Vec<Entry> {
        if self.applied >= self.committed {
            return Vec::new();
        }
        self.slice(self.applied + 1, self.committed, bytes_max)
    }

    /// The driver applied entries up to `index`.
    pub fn applied_to(&mut self, index: Index) {
        assert!(
            index <= self.committed,
            "apply invariant: applied {index} beyond committed {}",
            self.committed
        );
        self.applied = self.applied.max(index);
    }

    /// Forgets entries up to `index`, which must be applied. Used after a
    /// snapshot covers them.
    pub fn compact(&mut self, index: Index) {
        if index <= self.offset {
            return;
        }
        assert!(
            index <= self.applied && index <= self.stable,
            "compaction invariant: compact to {index} beyond applied {} or stable {}",
            self.applied,
            self.stable
        );
        let term = self.term(index).expect("compaction point is in the log");
        let drop = (index - self.offset) as usize;
        self.entries.drain(..drop);
        self.offset = index;
        self.offset_term = term;
    }

    /// Replaces the whole log with a snapshot ending at `(index, term)`:
    /// everything up to `index` is committed and applied (once the driver
    /// installs the snapshot), and no entry is held.
    pub fn restore_snapshot(&mut self, index: Index, term: Term) {
        assert!(
            index > self.committed,
            "snapshot invariant: restoring snapshot {index} at or below commit {}",
            self.committed
        );
        self.entries.clear();
        self.offset = index;
        self.offset_term = term;
        self.stable = index;
        self.committed = index;
        self.applied = index;
    }

    /// Checks the structural invariants; panics naming the broken one.
    pub fn check(&self) {
        assert!(
            self.applied <= self.committed && self.committed <= self.last_index(),
            "log position invariant: applied {} <= committed {} <= last {}",
            self.applied,
            self.committed,
            self.last_index()
        );
        assert!(
            self.stable <= self.last_index() && self.offset <= self.stable.max(self.offset),
            "log stable invariant"
        );
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(
                e.index,
                self.offset + 1 + i as Index,
                "log contiguity invariant"
            );
        }
    }
}

impl Default for RaftLog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    #[test]
    fn merge_replaces_conflicting_suffix_only() {
        let mut log = RaftLog::new();
        for i in 1..=5 {
            log.append_new(e(i, 1));
        }
        log.stable_to(5, 1);
        log.commit_to(2);
        let last = log.merge(vec![e(3, 1), e(4, 2), e(5, 2), e(6, 2)]);
        assert_eq!(last, 6);
        assert_eq!(log.term(3), Some(1));
        assert_eq!(log.term(4), Some(2));
        assert_eq!(log.stable(), 3, "stable frontier drops to the conflict");
        assert_eq!(log.unstable_entries().len(), 3);
        log.check();
    }

    #[test]
    #[should_panic(expected = "committed-entry invariant")]
    fn merge_refuses_to_overwrite_committed() {
        let mut log = RaftLog::new();
        log.append_new(e(1, 1));
        log.commit_to(1);
        log.merge(vec![e(1, 2)]);
    }

    #[test]
    fn compaction_keeps_terms_at_the_boundary() {
        let mut log = RaftLog::new();
        for i in 1..=4 {
            log.append_new(e(i, i));
        }
        log.stable_to(4, 4);
        log.commit_to(3);
        log.applied_to(3);
        log.compact(2);
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2), Some(2));
        assert_eq!(log.term(1), None);
        assert_eq!(log.slice(3, 4, usize::MAX).len(), 2);
        log.check();
    }

    #[test]
    fn slice_respects_byte_limit_but_sends_one() {
        let mut log = RaftLog::new();
        for i in 1..=3 {
            log.append_new(e(i, 1));
        }
        assert_eq!(log.slice(1, 3, 1).len(), 1);
        assert_eq!(log.slice(1, 3, 2 * ENTRY_OVERHEAD).len(), 2);
    }

    const ENTRY_OVERHEAD: usize = crate::types::ENTRY_OVERHEAD_BYTES;
}
