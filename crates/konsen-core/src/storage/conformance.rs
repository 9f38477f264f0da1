//! The storage conformance suite: what every [`Storage`] must do. Run it
//! against an implementation with [`run_all`]; each check panics with the
//! rule it found broken.
//!
//! The suite only calls the trait, so it does no I/O of its own: the
//! implementation under test brings its disk (or not) through `fresh`.
//! Errors are checked for presence only, since each implementation has its
//! own error type.

use bytes::Bytes;

use super::{Storage, StoredLog};
use crate::types::{Entry, EntryKind, HardState, Index, Term};

/// One named rule and the check that enforces it.
type Check<S> = (&'static str, fn(&mut S));

/// Runs every check, each on a fresh store from `fresh`.
pub fn run_all<S: Storage>(mut fresh: impl FnMut() -> S) {
    let checks: [Check<S>; 14] = [
        (
            "an empty store loads the default",
            empty_store_loads_default,
        ),
        (
            "appended entries and hard state load back",
            append_round_trips,
        ),
        ("appends in several calls form one log", appends_accumulate),
        ("a hard state is stored without entries", hard_state_alone),
        (
            "store_commit moves the commit index and nothing else",
            store_commit_moves_only_the_commit,
        ),
        (
            "append_unsynced extends the log and moves only the commit index",
            append_unsynced_extends_the_log,
        ),
        (
            "an append of nothing changes nothing",
            empty_append_is_a_no_op,
        ),
        (
            "a conflicting append replaces the suffix",
            conflicting_append_truncates_suffix,
        ),
        (
            "an append may extend past the replaced suffix",
            overwrite_and_extend,
        ),
        (
            "a non-contiguous append is refused and changes nothing",
            non_contiguous_append_is_refused,
        ),
        (
            "entries(lo, hi) returns exactly [lo, hi]",
            entries_reads_ranges,
        ),
        (
            "entries outside the stored log are an error",
            entries_out_of_range,
        ),
        (
            "purge drops a prefix and keeps its last term",
            purge_keeps_purged_term,
        ),
        ("appends continue after a purge", append_after_purge),
    ];
    for (rule, check) in checks {
        let mut store = fresh();
        check(&mut store);
        // Every check leaves a store whose pieces agree with each other.
        assert_consistent(&store, rule);
    }
}

/// An entry whose payload names its position, so misplaced data shows.
fn entry(index: Index, term: Term) -> Entry {
    let kind = if index.is_multiple_of(5) {
        EntryKind::Membership
    } else {
        EntryKind::Normal
    };
    let data = if index.is_multiple_of(7) {
        Bytes::new()
    } else {
        Bytes::from(format!("entry {index} of term {term}"))
    };
    Entry {
        index,
        term,
        kind,
        data,
    }
}

/// Entries `lo..=hi`, all of `term`.
fn entries(lo: Index, hi: Index, term: Term) -> Vec<Entry> {
    (lo..=hi).map(|i| entry(i, term)).collect()
}

fn hard_state(term: Term, vote: Option<u64>, commit: Index) -> HardState {
    HardState { term, vote, commit }
}

fn append<S: Storage>(s: &mut S, hs: Option<HardState>, es: &[Entry]) {
    if let Err(e) = s.append(hs, es) {
        panic!(
            "append of {} entries (hard state {hs:?}) failed: {e}",
            es.len()
        );
    }
}

fn load<S: Storage>(s: &S) -> StoredLog {
    s.load().unwrap_or_else(|e| panic!("load failed: {e}"))
}

fn bounds<S: Storage>(s: &S) -> (Index, Index) {
    let first = s
        .first_index()
        .unwrap_or_else(|e| panic!("first_index failed: {e}"));
    let last = s
        .last_index()
        .unwrap_or_else(|e| panic!("last_index failed: {e}"));
    (first, last)
}

/// `load`, `first_index`, `last_index` and `entries` tell the same story.
fn assert_consistent<S: Storage>(s: &S, rule: &str) {
    let log = load(s);
    let (first, last) = bounds(s);
    assert_eq!(
        first,
        log.purged_index + 1,
        "{rule}: first_index is purged_index + 1"
    );
    assert_eq!(
        last,
        log.purged_index + log.entries.len() as Index,
        "{rule}: last_index is the last loaded entry's"
    );
    for (offset, e) in log.entries.iter().enumerate() {
        assert_eq!(
            e.index,
            first + offset as Index,
            "{rule}: loaded entries are contiguous"
        );
    }
    if last >= first {
        let read = s
            .entries(first, last)
            .unwrap_or_else(|e| panic!("{rule}: entries failed: {e}"));
        assert_eq!(
            read, log.entries,
            "{rule}: entries(first, last) equals the loaded log"
        );
    }
}

fn empty_store_loads_default<S: Storage>(s: &mut S) {
    assert_eq!(
        load(s),
        StoredLog::default(),
        "an empty store loads the default"
    );
    assert_eq!(
        bounds(s),
        (1, 0),
        "an empty store has first index 1 and last index 0"
    );
}

fn append_round_trips<S: Storage>(s: &mut S) {
    let hs = hard_state(3, Some(2), 4);
    let es = vec![
        entry(1, 1),
        entry(2, 1),
        entry(3, 2),
        entry(4, 2),
        entry(5, 3),
    ];
    append(s, Some(hs), &es);
    let log = load(s);
    assert_eq!(log.hard_state, hs, "the appended hard state loads back");
    assert_eq!(
        log.entries, es,
        "the appended entries load back, payloads and kinds intact"
    );
    assert_eq!(
        (log.purged_index, log.purged_term),
        (0, 0),
        "nothing is purged"
    );
    assert_eq!(bounds(s), (1, 5), "the log spans the appended entries");
}

fn appends_accumulate<S: Storage>(s: &mut S) {
    append(s, Some(hard_state(1, None, 0)), &entries(1, 3, 1));
    append(s, Some(hard_state(2, Some(1), 3)), &entries(4, 6, 2));
    let log = load(s);
    let mut expected = entries(1, 3, 1);
    expected.extend(entries(4, 6, 2));
    assert_eq!(
        log.entries, expected,
        "the second append continues the first"
    );
    assert_eq!(
        log.hard_state,
        hard_state(2, Some(1), 3),
        "the latest hard state wins"
    );
}

fn hard_state_alone<S: Storage>(s: &mut S) {
    let hs = hard_state(7, Some(3), 0);
    append(s, Some(hs), &[]);
    assert_eq!(
        load(s).hard_state,
        hs,
        "a hard state is stored without entries"
    );
    assert_eq!(bounds(s), (1, 0), "storing a hard state adds no entries");
    append(s, None, &entries(1, 2, 7));
    assert_eq!(
        load(s).hard_state,
        hs,
        "an append without hard state keeps the stored one"
    );
    let cleared = hard_state(8, None, 1);
    append(s, Some(cleared), &[]);
    assert_eq!(
        load(s).hard_state,
        cleared,
        "a vote can be cleared by a new term"
    );
}

fn store_commit_moves_only_the_commit<S: Storage>(s: &mut S) {
    append(s, Some(hard_state(4, Some(2), 1)), &entries(1, 3, 4));
    let moved = hard_state(4, Some(2), 3);
    if let Err(e) = s.store_commit(moved) {
        panic!("store_commit of {moved:?} failed: {e}");
    }
    assert_eq!(load(s).hard_state, moved, "the stored commit index moved");
    assert_eq!(bounds(s), (1, 3), "store_commit touches no entry");
    for changed in [hard_state(5, Some(2), 3), hard_state(4, Some(1), 3)] {
        assert!(
            s.store_commit(changed).is_err(),
            "store_commit of {changed:?} changes the term or vote and must be refused"
        );
    }
    assert_eq!(
        load(s).hard_state,
        moved,
        "a refused store_commit changes nothing"
    );
}

fn append_unsynced_extends_the_log<S: Storage>(s: &mut S) {
    append(s, Some(hard_state(4, Some(2), 1)), &entries(1, 3, 4));
    let moved = hard_state(4, Some(2), 2);
    if let Err(e) = s.append_unsynced(Some(moved), &entries(4, 5, 4)) {
        panic!("append_unsynced of entries 4..=5 failed: {e}");
    }
    if let Err(e) = s.append_unsynced(None, &entries(6, 6, 4)) {
        panic!("append_unsynced of entry 6 without a hard state failed: {e}");
    }
    let stored = load(s);
    assert_eq!(
        stored.entries,
        entries(1, 6, 4),
        "unsynced entries load back"
    );
    assert_eq!(stored.hard_state, moved, "the commit index moved");
    let before = load(s);
    for (hs, es, what) in [
        (None, entries(6, 7, 4), "overwrites entry 6"),
        (None, entries(8, 8, 4), "leaves a gap after 6"),
        (
            Some(hard_state(5, Some(2), 2)),
            entries(7, 7, 4),
            "changes the term",
        ),
        (
            Some(hard_state(4, Some(1), 2)),
            entries(7, 7, 4),
            "changes the vote",
        ),
    ] {
        assert!(
            s.append_unsynced(hs, &es).is_err(),
            "an unsynced append that {what} must be refused"
        );
    }
    assert_eq!(load(s), before, "a refused append_unsynced changes nothing");
    append(s, None, &entries(7, 7, 4));
    assert_eq!(bounds(s), (1, 7), "a synced append continues the log");
}

fn empty_append_is_a_no_op<S: Storage>(s: &mut S) {
    append(s, Some(hard_state(2, Some(1), 1)), &entries(1, 2, 2));
    let before = load(s);
    append(s, None, &[]);
    assert_eq!(load(s), before, "append(None, []) changes nothing");
}

fn conflicting_append_truncates_suffix<S: Storage>(s: &mut S) {
    append(s, Some(hard_state(1, None, 0)), &entries(1, 5, 1));
    append(s, Some(hard_state(2, None, 0)), &entries(3, 4, 2));
    let log = load(s);
    let mut expected = entries(1, 2, 1);
    expected.extend(entries(3, 4, 2));
    assert_eq!(
        log.entries, expected,
        "entries 3..=4 replaced and entry 5 dropped"
    );
    assert_eq!(
        bounds(s),
        (1, 4),
        "the last index moves back to the last new entry"
    );
    assert!(s.entries(5, 5).is_err(), "a dropped entry cannot be read");
    append(s, None, &entries(2, 2, 3));
    assert_eq!(
        load(s).entries,
        vec![entry(1, 1), entry(2, 3)],
        "a one-entry conflict drops the rest"
    );
}

fn overwrite_and_extend<S: Storage>(s: &mut S) {
    append(s, None, &entries(1, 3, 1));
    append(s, None, &entries(2, 6, 2));
    let mut expected = vec![entry(1, 1)];
    expected.extend(entries(2, 6, 2));
    assert_eq!(
        load(s).entries,
        expected,
        "the new entries replace 2..=3 and extend to 6"
    );
    append(s, None, &entries(4, 4, 2));
    assert_eq!(
        bounds(s),
        (1, 4),
        "re-appending an entry drops the stored ones after it"
    );
}

fn non_contiguous_append_is_refused<S: Storage>(s: &mut S) {
    assert!(
        s.append(None, &entries(2, 3, 1)).is_err(),
        "an empty log's first append must start at index 1"
    );
    assert!(
        s.append(None, &[entry(0, 1)]).is_err(),
        "index 0 is never an entry"
    );
    append(s, Some(hard_state(1, None, 0)), &entries(1, 3, 1));
    let before = load(s);
    let rejected = Some(hard_state(9, Some(9), 3));
    assert!(
        s.append(rejected, &entries(5, 6, 1)).is_err(),
        "a gap after the last index is refused"
    );
    let with_hole = vec![entry(4, 1), entry(6, 1)];
    assert!(
        s.append(rejected, &with_hole).is_err(),
        "entries with a hole are refused"
    );
    let backwards = vec![entry(3, 1), entry(2, 1)];
    assert!(
        s.append(rejected, &backwards).is_err(),
        "entries out of order are refused"
    );
    assert_eq!(
        load(s),
        before,
        "a refused append stores neither entries nor hard state"
    );
}

fn entries_reads_ranges<S: Storage>(s: &mut S) {
    let mut all = entries(1, 4, 1);
    all.extend(entries(5, 8, 2));
    append(s, None, &all);
    for (lo, hi) in [(1, 8), (2, 4), (5, 5), (4, 5), (8, 8)] {
        let read = s
            .entries(lo, hi)
            .unwrap_or_else(|e| panic!("entries({lo}, {hi}) failed: {e}"));
        assert_eq!(
            read,
            all[lo as usize - 1..hi as usize],
            "entries({lo}, {hi})"
        );
    }
}

fn entries_out_of_range<S: Storage>(s: &mut S) {
    assert!(s.entries(1, 1).is_err(), "an empty log has no entry 1");
    append(s, None, &entries(1, 5, 1));
    for (lo, hi) in [(0, 1), (0, 0), (1, 6), (6, 6), (4, 3)] {
        assert!(
            s.entries(lo, hi).is_err(),
            "entries({lo}, {hi}) of log [1, 5] is an error"
        );
    }
}

fn purge_keeps_purged_term<S: Storage>(s: &mut S) {
    let mut all = entries(1, 3, 1);
    all.extend(entries(4, 10, 2));
    append(s, Some(hard_state(2, Some(1), 10)), &all);
    s.purge(4)
        .unwrap_or_else(|e| panic!("purge(4) failed: {e}"));
    assert_eq!(bounds(s), (5, 10), "purge(4) moves the first index to 5");
    let log = load(s);
    assert_eq!(
        (log.purged_index, log.purged_term),
        (4, 2),
        "the purge point keeps entry 4's term"
    );
    assert_eq!(log.entries, all[4..], "entries after the purge point stay");
    assert_eq!(
        log.hard_state,
        hard_state(2, Some(1), 10),
        "purge keeps the hard state"
    );
    assert!(s.entries(4, 5).is_err(), "purged entries cannot be read");
    s.purge(2)
        .unwrap_or_else(|e| panic!("purge(2) behind the purge point failed: {e}"));
    assert_eq!(
        bounds(s),
        (5, 10),
        "purging behind the purge point changes nothing"
    );
    assert!(
        s.purge(11).is_err(),
        "purging past the last index is an error"
    );
    s.purge(10)
        .unwrap_or_else(|e| panic!("purge(10) failed: {e}"));
    let log = load(s);
    assert_eq!(
        (log.purged_index, log.purged_term),
        (10, 2),
        "purging everything keeps the last term"
    );
    assert!(
        log.entries.is_empty(),
        "purging to the last index leaves no entries"
    );
    assert_eq!(bounds(s), (11, 10), "an empty purged log: first = last + 1");
}

fn append_after_purge<S: Storage>(s: &mut S) {
    append(s, None, &entries(1, 6, 1));
    s.purge(3)
        .unwrap_or_else(|e| panic!("purge(3) failed: {e}"));
    append(s, None, &entries(5, 8, 2));
    let mut expected = entries(4, 4, 1);
    expected.extend(entries(5, 8, 2));
    assert_eq!(
        load(s).entries,
        expected,
        "a conflicting append after a purge replaces the suffix"
    );
    assert!(
        s.append(None, &entries(3, 4, 3)).is_err(),
        "appending at a purged index is refused"
    );
    s.purge(8)
        .unwrap_or_else(|e| panic!("purge(8) failed: {e}"));
    append(s, None, &entries(9, 10, 3));
    let log = load(s);
    assert_eq!(
        log.entries,
        entries(9, 10, 3),
        "an emptied log continues after the purge point"
    );
    assert_eq!(
        (log.purged_index, log.purged_term),
        (8, 2),
        "appending keeps the purge point"
    );
    assert!(
        s.append(None, &entries(11, 11, 3)).is_ok(),
        "the log grows on"
    );
}
