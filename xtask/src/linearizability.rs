//! A linearizability checker for histories of single-key registers, for the
//! fault-injection suite (`cargo xtask chaos`).
//!
//! A history is a list of operations, each with the time it was invoked,
//! the time it completed, and its outcome. The checker asks whether some
//! total order of the operations (1) respects real time: an operation that
//! completed before another was invoked comes first; and (2) is a legal
//! sequential history of a register: every read returns the latest write.
//!
//! Keys are independent (linearizability is compositional), so a history
//! is split per key and each key is checked alone. The search is Wing and
//! Gong's, with Lowe's memoization: a configuration (which operations are
//! linearized, and the register's value) that was explored once is never
//! explored again.
//!
//! Operations: a write, a read, and a compare-and-swap (CAS: if the
//! register holds the expected value, or is absent when that is expected,
//! set it to a new one). A CAS's effect depends only on the register's
//! value, so a configuration stays (linearized operations, value) and the
//! memoization stays exact: two searches that reach the same configuration
//! have the same futures.
//!
//! Outcomes:
//! * `Ok`: the operation happened, with the recorded result. For a CAS the
//!   result is part of the operation ([`CasResult`]): it swapped (the value
//!   was the expected one at its linearization point), or the compare
//!   failed (the value was not the expected one there, and was the value
//!   the client read in the failure branch, when it read one). A failed
//!   compare wrote nothing but is no less definite than a read.
//! * `Failed`: it definitely did not happen (the server refused it). It is
//!   left out.
//! * `Unknown`: it timed out. A write may have happened at any time after
//!   its invocation, or never; an unknown read tells nothing and is left
//!   out. An unknown CAS is an unknown write that can take effect only
//!   where the register holds its expected value (had its compare failed,
//!   it changed nothing, which is the same as never having happened).

use std::collections::{BTreeMap, HashSet};

/// A register value. Every write in a test writes a unique value, so a
/// value names the write that produced it.
pub type Value = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Write(Value),
    /// A read and what it returned (`None`: the key did not exist).
    Read(Option<Value>),
    /// If the register holds `expected` (`None`: the key does not exist),
    /// set it to `new`. `result` counts only when the outcome is `Ok`; the
    /// recorder gives other outcomes [`CasResult::NotSwappedUnread`]
    /// (nothing learned).
    Cas {
        expected: Option<Value>,
        new: Value,
        result: CasResult,
    },
}

/// What came of a CAS that completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasResult {
    /// The compare held and `new` was written.
    Swapped,
    /// The compare failed, and the register held this (`None`: the key did
    /// not exist), which therefore is not the expected value.
    NotSwapped(Option<Value>),
    /// The compare failed; what the register held was not read.
    NotSwappedUnread,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Unknown,
}

/// One client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    pub key: String,
    pub kind: OpKind,
    /// When the client sent it (any monotonic clock, e.g. nanoseconds).
    pub invoke: u64,
    /// When the answer came (for `Unknown`: when the client gave up).
    pub complete: u64,
    pub outcome: Outcome,
}

/// Why a key's history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// The operation the search could never place: every order of the
    /// operations before its completion contradicts it. (Boxed: keeps
    /// the `Err` of a check small.)
    pub stuck_at: Box<Op>,
    /// Operations of this key that were checked.
    pub ops: usize,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = &self.stuck_at;
        write!(
            f,
            "key {:?} is not linearizable ({} operations): no order explains {:?} by client {} \
             (invoked {}, completed {})",
            self.key, self.ops, op.kind, op.client, op.invoke, op.complete
        )
    }
}

/// Checks every key of `history`. Returns the first violation found.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (_, ops) in by_key {
        check_key(ops)?;
    }
    Ok(())
}

/// An event in time order: an operation's invocation or its completion.
#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
    /// Doubly linked list over the events not yet lifted out.
    prev: usize,
    next: usize,
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// Checks the operations of one key.
fn check_key(ops: Vec<Op>) -> Result<(), Violation> {
    // Definite failures did not happen; unknown reads tell nothing.
    let ops: Vec<Op> = ops
        .into_iter()
        .filter(|op| match op.outcome {
            Outcome::Ok => true,
            Outcome::Failed => false,
            Outcome::Unknown => matches!(op.kind, OpKind::Write(_) | OpKind::Cas { .. }),
        })
        .collect();
    if ops.is_empty() {
        return Ok(());
    }
    // Unknown writes (CASes included) may take effect at any time after
    // invocation, or never: their
    // completion is at infinity. Calls sort before completions at the same
    // instant, so touching operations count as concurrent (never wrongly
    // ordered).
    let end = |op: &Op| {
        if op.outcome == Outcome::Unknown {
            u64::MAX
        } else {
            op.complete
        }
    };
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoke, false, i));
        order.push((end(op), true, i));
    }
    order.sort();
    // events[0] is the list head; events[k] for k >= 1 is order[k - 1].
    let mut events = vec![Event {
        op: NIL,
        is_call: false,
        prev: NIL,
        next: 1,
    }];
    let mut return_of = vec![0; ops.len()];
    for (k, &(_, is_return, op)) in order.iter().enumerate() {
        let idx = k + 1;
        if is_return {
            return_of[op] = idx;
        }
        events.push(Event {
            op,
            is_call: !is_return,
            prev: idx - 1,
            next: if k + 1 == order.len() { NIL } else { idx + 1 },
        });
    }

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: Option<Value> = None;
    let mut cache: HashSet<(Vec<u64>, Option<Value>)> = HashSet::new();
    // For backtracking: (call event lifted, state before it).
    let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
    let mut entry = events[HEAD].next;
    let mut deepest: (usize, usize) = (0, 0); // (stack depth, op stuck at)

    while entry != NIL {
        let ev = events[entry];
        let op = &ops[ev.op];
        if ev.is_call {
            if let Some(next_state) = step(op, state) {
                linearized[ev.op / 64] |= 1 << (ev.op % 64);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    lift(&mut events, entry, return_of[ev.op]);
                    entry = events[HEAD].next;
                    continue;
                }
                linearized[ev.op / 64] &= !(1 << (ev.op % 64));
            }
            entry = ev.next;
        } else {
            // A completion reached before its operation could be placed.
            if end(op) == u64::MAX {
                // Only unknown writes and CASes remain; they may never have
                // happened.
                return Ok(());
            }
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), ev.op);
            }
            let Some((call, prev_state)) = stack.pop() else {
                return Err(Violation {
                    key: op.key.clone(),
                    stuck_at: Box::new(ops[deepest.1].clone()),
                    ops: ops.len(),
                });
            };
            let call_op = events[call].op;
            linearized[call_op / 64] &= !(1 << (call_op % 64));
            state = prev_state;
            unlift(&mut events, call, return_of[call_op]);
            entry = events[call].next;
        }
    }
    Ok(())
}

/// The register's value after `op` takes effect where it holds `state`,
/// or `None` when `op` cannot take effect there (its result contradicts
/// `state`).
fn step(op: &Op, state: Option<Value>) -> Option<Option<Value>> {
    match op.kind {
        OpKind::Write(v) => Some(Some(v)),
        OpKind::Read(seen) => (seen == state).then_some(state),
        OpKind::Cas {
            expected,
            new,
            result,
        } => {
            let holds = state == expected;
            // An unknown CAS is placed only where it swaps: one whose
            // compare failed changed nothing, like one that never ran,
            // which the search allows by never placing it.
            let result = if op.outcome == Outcome::Unknown {
                CasResult::Swapped
            } else {
                result
            };
            match result {
                CasResult::Swapped => holds.then_some(Some(new)),
                CasResult::NotSwapped(current) => (!holds && current == state).then_some(state),
                CasResult::NotSwappedUnread => (!holds).then_some(state),
            }
        }
    }
}

/// Takes an operation's call and return events out of the list.
fn lift(events: &mut [Event], call: usize, ret: usize) {
    for idx in [call, ret] {
        let Event { prev, next, .. } = events[idx];
        events[prev].next = next;
        if next != NIL {
            events[next].prev = prev;
        }
    }
}

/// Puts them back (in reverse order of `lift`).
fn unlift(events: &mut [Event], call: usize, ret: usize) {
    for idx in [ret, call] {
        let Event { prev, next, .. } = events[idx];
        events[prev].next = idx;
        if next != NIL {
            events[next].prev = idx;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An operation on key "k" (shared with the chaos suite's tests).
    pub(crate) fn op(
        client: u64,
        kind: OpKind,
        invoke: u64,
        complete: u64,
        outcome: Outcome,
    ) -> Op {
        Op {
            client,
            key: "k".into(),
            kind,
            invoke,
            complete,
            outcome,
        }
    }
    fn w(c: u64, v: Value, a: u64, b: u64) -> Op {
        op(c, OpKind::Write(v), a, b, Outcome::Ok)
    }
    fn r(c: u64, v: Option<Value>, a: u64, b: u64) -> Op {
        op(c, OpKind::Read(v), a, b, Outcome::Ok)
    }
    /// A CAS that completed, from `expected` to `new`.
    pub(crate) fn cas(
        c: u64,
        expected: Option<Value>,
        new: Value,
        result: CasResult,
        a: u64,
        b: u64,
    ) -> Op {
        let kind = OpKind::Cas {
            expected,
            new,
            result,
        };
        op(c, kind, a, b, Outcome::Ok)
    }
    /// A CAS with `outcome` other than `Ok`, recorded as the workload does.
    fn cas_not_ok(c: u64, expected: Option<Value>, new: Value, a: u64, outcome: Outcome) -> Op {
        let mut o = cas(c, expected, new, CasResult::NotSwappedUnread, a, a + 1);
        o.outcome = outcome;
        o
    }
    use CasResult::{NotSwapped, NotSwappedUnread, Swapped};

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            r(1, None, 0, 1),
            w(1, 1, 2, 3),
            r(2, Some(1), 4, 5),
            w(2, 2, 6, 7),
            r(1, Some(2), 8, 9),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn concurrent_writes_may_be_seen_in_either_order() {
        let h = [
            w(1, 1, 0, 10),
            w(2, 2, 0, 10),
            r(3, Some(2), 11, 12),
            r(3, Some(2), 13, 14),
        ];
        assert_eq!(check(&h), Ok(()));
        let h = [w(1, 1, 0, 10), w(2, 2, 0, 10), r(3, Some(1), 11, 12)];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn stale_read_is_rejected() {
        // The write of 2 completed before the read began, yet it saw 1.
        let h = [w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, Some(1), 4, 5)];
        let v = check(&h).expect_err("stale read");
        assert_eq!(v.stuck_at.kind, OpKind::Read(Some(1)));
    }

    #[test]
    fn lost_write_is_rejected() {
        // An acknowledged write that a later read does not see.
        let h = [w(1, 1, 0, 1), r(2, None, 2, 3)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn value_never_written_is_rejected() {
        let h = [w(1, 1, 0, 1), r(2, Some(7), 2, 3)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn reads_must_not_go_back_in_time() {
        // Two reads during one long write: once a read has seen the new
        // value, a later read may not see the old one.
        let h = [
            w(1, 1, 0, 1),
            w(1, 2, 2, 20),
            r(2, Some(2), 3, 4),
            r(3, Some(1), 5, 6),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn unknown_write_may_or_may_not_have_happened() {
        let unknown = op(1, OpKind::Write(5), 0, 1, Outcome::Unknown);
        assert_eq!(check(&[unknown.clone(), r(2, None, 2, 3)]), Ok(()));
        // ...even long after the client gave up.
        assert_eq!(
            check(&[unknown.clone(), r(2, None, 2, 3), r(2, Some(5), 100, 101)]),
            Ok(())
        );
        // But once seen, it cannot un-happen.
        assert!(check(&[unknown, r(2, Some(5), 2, 3), r(2, None, 4, 5)]).is_err());
    }

    #[test]
    fn failed_operations_did_not_happen() {
        let failed = op(1, OpKind::Write(5), 0, 1, Outcome::Failed);
        assert!(check(&[failed, r(2, Some(5), 2, 3)]).is_err());
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = w(1, 9, 0, 1);
        other.key = "other".into();
        let h = [other, r(2, None, 2, 3)];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn sequential_cas_history_is_linearizable() {
        let h = [
            cas(1, None, 1, Swapped, 0, 1),
            r(2, Some(1), 2, 3),
            cas(2, Some(1), 2, Swapped, 4, 5),
            cas(1, Some(1), 3, NotSwapped(Some(2)), 6, 7),
            cas(1, None, 4, NotSwapped(Some(2)), 8, 9),
            cas(3, Some(7), 5, NotSwappedUnread, 10, 11),
            w(3, 6, 12, 13),
            cas(2, Some(6), 7, Swapped, 14, 15),
            r(1, Some(7), 16, 17),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn concurrent_cases_where_one_wins_are_accepted() {
        // Three clients create the key at once; 2 wins, the others see it.
        let h = [
            cas(1, None, 1, NotSwapped(Some(2)), 0, 10),
            cas(2, None, 2, Swapped, 0, 10),
            cas(3, None, 3, NotSwapped(Some(2)), 0, 10),
            r(4, Some(2), 11, 12),
        ];
        assert_eq!(check(&h), Ok(()));
        // Two from the same value: the loser saw the winner's.
        let h = [
            w(1, 1, 0, 1),
            cas(2, Some(1), 2, NotSwapped(Some(3)), 2, 10),
            cas(3, Some(1), 3, Swapped, 2, 10),
            r(1, Some(3), 11, 12),
        ];
        assert_eq!(check(&h), Ok(()));
        // But never two winners from one value.
        let h = [
            cas(1, None, 1, Swapped, 0, 10),
            cas(2, None, 2, Swapped, 0, 10),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn cas_on_a_stale_value_is_rejected() {
        // 1 was overwritten by 2 before the CAS was invoked, yet the CAS
        // found 1 and swapped.
        let stale = cas(3, Some(1), 3, Swapped, 4, 5);
        let h = [w(1, 1, 0, 1), w(2, 2, 2, 3), stale.clone()];
        let v = check(&h).expect_err("a CAS that swapped on a stale value");
        assert_eq!(*v.stuck_at, stale);
        // The same CAS while the overwrite is still in flight is fine.
        let h = [w(1, 1, 0, 1), w(2, 2, 2, 10), stale, r(3, Some(2), 11, 12)];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn lost_update_is_rejected() {
        // Two CASes from 1, one after the other, both swapped: the second
        // must have seen 2.
        let h = [
            w(1, 1, 0, 1),
            cas(2, Some(1), 2, Swapped, 2, 3),
            cas(3, Some(1), 3, Swapped, 4, 5),
        ];
        assert!(check(&h).is_err());
        // Concurrent, they still cannot both win.
        let h = [
            w(1, 1, 0, 1),
            cas(2, Some(1), 2, Swapped, 2, 10),
            cas(3, Some(1), 3, Swapped, 2, 10),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn failed_compare_with_an_impossible_current_value_is_rejected() {
        let with = |o: Op| check(&[w(1, 1, 0, 1), o]);
        assert_eq!(with(cas(2, Some(2), 3, NotSwapped(Some(1)), 2, 3)), Ok(()));
        // A value never written.
        assert!(with(cas(2, Some(2), 3, NotSwapped(Some(7)), 2, 3)).is_err());
        // The key exists.
        assert!(with(cas(2, Some(2), 3, NotSwapped(None), 2, 3)).is_err());
        // The compare would have held.
        assert!(with(cas(2, Some(1), 3, NotSwapped(Some(1)), 2, 3)).is_err());
        assert!(with(cas(2, Some(1), 3, NotSwappedUnread, 2, 3)).is_err());
        // A value overwritten before the CAS was invoked.
        let h = [
            w(1, 1, 0, 1),
            w(1, 2, 2, 3),
            cas(2, Some(5), 3, NotSwapped(Some(1)), 4, 5),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn unknown_cas_may_or_may_not_have_happened() {
        let unknown = cas_not_ok(2, Some(1), 2, 2, Outcome::Unknown);
        let with = |rest: &[Op]| {
            let mut h = vec![w(1, 1, 0, 1), unknown.clone()];
            h.extend_from_slice(rest);
            check(&h)
        };
        assert_eq!(with(&[r(3, Some(1), 4, 5)]), Ok(()));
        assert_eq!(with(&[r(3, Some(2), 4, 5)]), Ok(()));
        // ...even long after the client gave up.
        assert_eq!(
            with(&[r(3, Some(1), 4, 5), r(3, Some(2), 100, 101)]),
            Ok(())
        );
        // Once seen, it cannot un-happen.
        assert!(with(&[r(3, Some(2), 4, 5), r(3, Some(1), 6, 7)]).is_err());
        // It can only have swapped where the value was the expected one:
        // not after 1 was overwritten before it was invoked...
        let h = [
            w(1, 1, 0, 1),
            w(1, 3, 2, 3),
            cas_not_ok(2, Some(1), 2, 4, Outcome::Unknown),
            r(3, Some(2), 6, 7),
        ];
        assert!(check(&h).is_err());
        // ...nor on a key that exists, when it expected none.
        let h = [
            w(1, 1, 0, 1),
            cas_not_ok(2, None, 2, 2, Outcome::Unknown),
            r(3, Some(2), 6, 7),
        ];
        assert!(check(&h).is_err());
        // An unknown CAS's recorded result is ignored.
        let mut noisy = unknown.clone();
        noisy.kind = OpKind::Cas {
            expected: Some(1),
            new: 2,
            result: NotSwapped(Some(9)),
        };
        assert_eq!(check(&[w(1, 1, 0, 1), noisy, r(3, Some(2), 4, 5)]), Ok(()));
    }

    #[test]
    fn failed_cas_did_not_happen() {
        let failed = cas_not_ok(1, None, 1, 0, Outcome::Failed);
        assert!(check(&[failed.clone(), r(2, Some(1), 2, 3)]).is_err());
        assert_eq!(check(&[failed, r(2, None, 2, 3)]), Ok(()));
    }

    /// Histories made by a real register, each operation taking effect at a
    /// random instant within its interval, are always accepted.
    #[test]
    fn histories_of_a_real_register_are_accepted() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut swapped = 0;
        for _ in 0..300 {
            // (linearization point, op) with the result filled in later.
            let mut ops: Vec<(u64, Op)> = Vec::new();
            for i in 0..30u64 {
                let invoke = rng.random_range(0..200);
                let complete = invoke + rng.random_range(1..40);
                let point = rng.random_range(invoke..complete);
                let kind = match rng.random_range(0..3) {
                    0 => OpKind::Write(i),
                    1 => OpKind::Read(None),
                    _ => OpKind::Cas {
                        expected: None,
                        new: i,
                        result: NotSwappedUnread,
                    },
                };
                let outcome = if rng.random_bool(0.1) {
                    Outcome::Unknown
                } else {
                    Outcome::Ok
                };
                ops.push((point, op(i % 4, kind, invoke, complete, outcome)));
            }
            ops.sort_by_key(|(point, _)| *point);
            let mut value = None;
            // Every value the register held so far, for stale expectations.
            let mut held = vec![None];
            for (_, o) in &mut ops {
                match o.kind {
                    OpKind::Write(v) => value = Some(v),
                    OpKind::Read(_) => o.kind = OpKind::Read(value),
                    OpKind::Cas { new, .. } => {
                        // Mostly the current value, else any earlier one.
                        let expected = if rng.random_bool(0.6) {
                            value
                        } else {
                            held[rng.random_range(0..held.len())]
                        };
                        let result = if expected == value {
                            value = Some(new);
                            swapped += 1;
                            Swapped
                        } else if rng.random_bool(0.8) {
                            NotSwapped(value)
                        } else {
                            NotSwappedUnread
                        };
                        let result = if o.outcome == Outcome::Ok {
                            result
                        } else {
                            NotSwappedUnread
                        };
                        o.kind = OpKind::Cas {
                            expected,
                            new,
                            result,
                        };
                    }
                }
                held.push(value);
            }
            let h: Vec<Op> = ops.into_iter().map(|(_, o)| o).collect();
            assert_eq!(check(&h), Ok(()), "{h:#?}");
        }
        assert!(swapped > 1000, "too few CASes swapped: {swapped}");
    }

    /// The value after `op` in `state` by the rules of a register with CAS,
    /// written out apart from [`step`]: an unknown CAS whose compare fails
    /// is placed as a no-op here (the checker never places it).
    fn brute_force_step(op: &Op, state: Option<Value>) -> Option<Option<Value>> {
        let OpKind::Cas {
            expected,
            new,
            result,
        } = op.kind
        else {
            return match op.kind {
                OpKind::Read(seen) if seen != state => None,
                OpKind::Write(v) => Some(Some(v)),
                _ => Some(state),
            };
        };
        let holds = state == expected;
        match (op.outcome, result) {
            (Outcome::Unknown, _) => Some(if holds { Some(new) } else { state }),
            (_, Swapped) if holds => Some(Some(new)),
            (_, NotSwapped(current)) if !holds && current == state => Some(state),
            (_, NotSwappedUnread) if !holds => Some(state),
            _ => None,
        }
    }

    /// Whether some order of the operations not yet `placed`, respecting
    /// real time, is legal from `state`.
    fn some_order_is_legal(ops: &[&Op], placed: &mut [bool], state: Option<Value>) -> bool {
        if placed.iter().all(|&p| p) {
            return true;
        }
        let end = |o: &Op| {
            if o.outcome == Outcome::Unknown {
                u64::MAX
            } else {
                o.complete
            }
        };
        for i in 0..ops.len() {
            let must_wait = (0..ops.len()).any(|j| !placed[j] && end(ops[j]) < ops[i].invoke);
            if placed[i] || must_wait {
                continue;
            }
            if let Some(next) = brute_force_step(ops[i], state) {
                placed[i] = true;
                let legal = some_order_is_legal(ops, placed, next);
                placed[i] = false;
                if legal {
                    return true;
                }
            }
        }
        false
    }

    /// Linearizability by trying every order of the operations, with every
    /// subset of the unknown ones left out.
    fn brute_force(history: &[Op]) -> bool {
        let ops: Vec<&Op> = history
            .iter()
            .filter(|o| match o.outcome {
                Outcome::Ok => true,
                Outcome::Failed => false,
                Outcome::Unknown => !matches!(o.kind, OpKind::Read(_)),
            })
            .collect();
        let unknown: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].outcome == Outcome::Unknown)
            .collect();
        (0..1u32 << unknown.len()).any(|left_out| {
            let kept: Vec<&Op> = (0..ops.len())
                .filter(|i| {
                    unknown
                        .iter()
                        .position(|u| u == i)
                        .is_none_or(|bit| left_out & (1 << bit) == 0)
                })
                .map(|i| ops[i])
                .collect();
            some_order_is_legal(&kept, &mut vec![false; kept.len()], None)
        })
    }

    /// Small random histories with CASes, many of them not linearizable:
    /// the search with memoization agrees with trying every order.
    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(13);
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..3000 {
            let mut h = Vec::new();
            for i in 1..=7u64 {
                let invoke = rng.random_range(0..16);
                let complete = invoke + rng.random_range(1..6);
                // None, or one of the first few values written.
                let value = |rng: &mut rand::rngs::SmallRng| {
                    rng.random_range(0..5u64).checked_sub(1).map(|v| v + 1)
                };
                let kind = match rng.random_range(0..6) {
                    0 | 1 => OpKind::Write(i),
                    2 => OpKind::Read(value(&mut rng)),
                    _ => {
                        let expected = value(&mut rng);
                        let current = value(&mut rng);
                        let result = match rng.random_range(0..4) {
                            0 | 1 => Swapped,
                            2 => NotSwapped(current),
                            _ => NotSwappedUnread,
                        };
                        OpKind::Cas {
                            expected,
                            new: i,
                            result,
                        }
                    }
                };
                let outcome = match rng.random_range(0..10) {
                    0 | 1 => Outcome::Unknown,
                    2 => Outcome::Failed,
                    _ => Outcome::Ok,
                };
                h.push(op(i % 3, kind, invoke, complete, outcome));
            }
            let expected = brute_force(&h);
            assert_eq!(check(&h).is_ok(), expected, "{h:#?}");
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        assert!(
            valid > 300 && invalid > 300,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn a_long_concurrent_history_is_checked_quickly() {
        // 8 clients, 400 operations, heavy overlap: memoization keeps the
        // search small.
        let mut h = Vec::new();
        let mut last = None;
        for i in 0..400u64 {
            let t = i * 10;
            if i % 2 == 0 {
                h.push(w(i % 8, i, t, t + 35));
                last = Some(i);
            } else {
                h.push(r(i % 8, last, t, t + 35));
            }
        }
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_long_concurrent_history_with_cas_is_checked_quickly() {
        // 8 clients, 600 operations overlapping as above: a third writes, a
        // third CASes (some from a stale value, failing), a third reads.
        let mut h = Vec::new();
        let mut last = None;
        let mut older = None;
        for i in 0..600u64 {
            let t = i * 10;
            let c = i % 8;
            match i % 3 {
                0 => {
                    h.push(w(c, i, t, t + 35));
                    (older, last) = (last, Some(i));
                }
                1 if i % 5 == 0 && older != last => {
                    h.push(cas(c, older, i, NotSwapped(last), t, t + 35));
                }
                1 => {
                    h.push(cas(c, last, i, Swapped, t, t + 35));
                    (older, last) = (last, Some(i));
                }
                _ => h.push(r(c, last, t, t + 35)),
            }
        }
        assert_eq!(check(&h), Ok(()));
    }
}
