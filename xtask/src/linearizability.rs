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
//! Outcomes:
//! * `Ok`: the operation happened, with the recorded result.
//! * `Failed`: it definitely did not happen (the server refused it). It is
//!   left out.
//! * `Unknown`: it timed out. A write may have happened at any time after
//!   its invocation, or never; an unknown read tells nothing and is left
//!   out.

use std::collections::{BTreeMap, HashSet};

/// A register value. Every write in a test writes a unique value, so a
/// value names the write that produced it.
pub type Value = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Write(Value),
    /// A read and what it returned (`None`: the key did not exist).
    Read(Option<Value>),
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
    /// operations before its completion contradicts it.
    pub stuck_at: Op,
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
            Outcome::Unknown => matches!(op.kind, OpKind::Write(_)),
        })
        .collect();
    if ops.is_empty() {
        return Ok(());
    }
    // Unknown writes may take effect at any time after invocation: their
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
            let next_state = match op.kind {
                OpKind::Write(v) => Some(Some(v)),
                OpKind::Read(r) if r == state => Some(state),
                OpKind::Read(_) => None,
            };
            if let Some(next_state) = next_state {
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
                // Only unknown writes remain; they may never have happened.
                return Ok(());
            }
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), ev.op);
            }
            let Some((call, prev_state)) = stack.pop() else {
                return Err(Violation {
                    key: op.key.clone(),
                    stuck_at: ops[deepest.1].clone(),
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

    /// Histories made by a real register, each operation taking effect at a
    /// random instant within its interval, are always accepted.
    #[test]
    fn histories_of_a_real_register_are_accepted() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..300 {
            // (linearization point, op) with the result filled in later.
            let mut ops: Vec<(u64, Op)> = Vec::new();
            for i in 0..30u64 {
                let invoke = rng.random_range(0..200);
                let complete = invoke + rng.random_range(1..40);
                let point = rng.random_range(invoke..complete);
                let kind = if rng.random_bool(0.5) {
                    OpKind::Write(i)
                } else {
                    OpKind::Read(None)
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
            for (_, o) in &mut ops {
                match o.kind {
                    OpKind::Write(v) => value = Some(v),
                    OpKind::Read(_) => o.kind = OpKind::Read(value),
                }
            }
            let h: Vec<Op> = ops.into_iter().map(|(_, o)| o).collect();
            assert_eq!(check(&h), Ok(()), "{h:#?}");
        }
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
}
