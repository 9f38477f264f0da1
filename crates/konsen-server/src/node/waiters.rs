//! Clients waiting on the node loop: writes waiting to be applied, and
//! linearizable reads waiting for their read index and then for the state
//! machine to reach it.
//!
//! Each list is bounded by `limits.pending_proposals_max`. A write carries
//! its deadline and is failed as timed out at the first tick past it; a
//! waiter whose client went away is dropped at the next housekeeping round
//! (every `HOUSEKEEPING_TICKS` ticks).

use std::collections::{BTreeMap, HashMap};

use konsen_core::{Index, Term};
use konsen_rpc::convert::WriteOutcome;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::NodeError;

/// How a waiting write is answered.
pub(crate) enum WriteReply {
    /// A task awaits the answer ([`super::NodeHandle::write`]).
    Channel(oneshot::Sender<Result<WriteOutcome, NodeError>>),
    /// The answer is handled where the loop produces it, on the loop's
    /// thread: the unary Put path (`put.rs`) answers its HTTP/2 stream from
    /// here, with no task, channel or wake-up per call. It must not block.
    Call(WriteCallback),
}

/// What a [`WriteReply::Call`] runs with the write's answer.
pub(crate) type WriteCallback = Box<dyn FnOnce(Result<WriteOutcome, NodeError>) + Send>;

impl WriteReply {
    /// Hands over the answer (to nobody, if the client went away).
    pub fn send(self, answer: Result<WriteOutcome, NodeError>) {
        match self {
            WriteReply::Channel(tx) => {
                let _ = tx.send(answer);
            }
            WriteReply::Call(call) => call(answer),
        }
    }

    /// Whether nobody waits any more. A callback cannot tell; it is
    /// answered by its deadline at the latest.
    fn is_closed(&self) -> bool {
        match self {
            WriteReply::Channel(tx) => tx.is_closed(),
            WriteReply::Call(_) => false,
        }
    }
}

impl std::fmt::Debug for WriteReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteReply::Channel(_) => "WriteReply::Channel",
            WriteReply::Call(_) => "WriteReply::Call",
        })
    }
}

/// A linearizable read, told the term once it may be served (its read index
/// is applied); the reading itself is the caller's.
pub(crate) type ReadReply = oneshot::Sender<Result<Term, NodeError>>;

/// A write proposed at some index in some term.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    pub term: Term,
    /// When its client stops waiting (`NodeError::TimedOut`).
    pub deadline: Instant,
    pub reply: WriteReply,
}

#[derive(Debug)]
pub(crate) struct Waiters {
    pending_max: usize,
    /// Log index → the write proposed there.
    writes: BTreeMap<Index, PendingWrite>,
    /// Read context → a read waiting for its read index.
    reads_unconfirmed: HashMap<u64, ReadReply>,
    /// Reads with a read index, waiting for the state machine to reach it.
    reads_confirmed: Vec<(Index, ReadReply)>,
    next_read_ctx: u64,
}

impl Waiters {
    pub fn new(pending_max: usize) -> Self {
        Waiters {
            pending_max,
            writes: BTreeMap::new(),
            reads_unconfirmed: HashMap::new(),
            reads_confirmed: Vec::new(),
            next_read_ctx: 1,
        }
    }

    pub fn writes_full(&self) -> bool {
        self.writes.len() >= self.pending_max
    }

    pub fn reads_full(&self) -> bool {
        self.reads_unconfirmed.len() + self.reads_confirmed.len() >= self.pending_max
    }

    pub fn add_write(&mut self, index: Index, write: PendingWrite) {
        // An index proposed again means the earlier proposal there lost its
        // place (a new term overwrote it).
        if let Some(old) = self.writes.insert(index, write) {
            old.reply.send(Err(NodeError::LeaderChanged));
        }
    }

    /// Takes the write waiting at `index`, if any.
    pub fn take_write(&mut self, index: Index) -> Option<PendingWrite> {
        self.writes.remove(&index)
    }

    /// A fresh read context and the read registered under it.
    pub fn add_read(&mut self, read: ReadReply) -> u64 {
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        self.reads_unconfirmed.insert(ctx, read);
        ctx
    }

    /// The read `ctx` may be served once `index` is applied.
    pub fn confirm_read(&mut self, ctx: u64, index: Index) {
        if let Some(read) = self.reads_unconfirmed.remove(&ctx) {
            self.reads_confirmed.push((index, read));
        }
    }

    pub fn fail_read(&mut self, ctx: u64, error: NodeError) {
        if let Some(read) = self.reads_unconfirmed.remove(&ctx) {
            let _ = read.send(Err(error));
        }
    }

    /// Takes the confirmed reads whose index is applied.
    pub fn take_servable_reads(&mut self, applied: Index) -> Vec<ReadReply> {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_confirmed)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        self.reads_confirmed = waiting;
        ready.into_iter().map(|(_, r)| r).collect()
    }

    /// Fails every waiting write (this node lost leadership: their fate is
    /// decided elsewhere now).
    pub fn fail_writes(&mut self, error: NodeError) {
        for (_, w) in std::mem::take(&mut self.writes) {
            w.reply.send(Err(error.clone()));
        }
    }

    /// Fails everything (shutdown).
    pub fn fail_all(&mut self, error: NodeError) {
        self.fail_writes(error.clone());
        for (_, r) in self.reads_unconfirmed.drain() {
            let _ = r.send(Err(error.clone()));
        }
        for (_, r) in self.reads_confirmed.drain(..) {
            let _ = r.send(Err(error.clone()));
        }
    }

    /// Fails the writes whose deadline passed by `now`. Their entries stay
    /// in the log and may still be applied: the client learns only that
    /// the answer did not come in time.
    pub fn expire_writes(&mut self, now: Instant) {
        let expired: Vec<Index> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(&index, _)| index)
            .collect();
        for index in expired {
            if let Some(w) = self.writes.remove(&index) {
                w.reply.send(Err(NodeError::TimedOut));
            }
        }
    }

    /// Forgets waiters whose clients stopped waiting.
    pub fn prune_abandoned(&mut self) {
        self.writes.retain(|_, w| !w.reply.is_closed());
        self.reads_unconfirmed.retain(|_, r| !r.is_closed());
        self.reads_confirmed.retain(|(_, r)| !r.is_closed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        term: Term,
    ) -> (
        PendingWrite,
        oneshot::Receiver<Result<WriteOutcome, NodeError>>,
    ) {
        write_until(term, Instant::now() + std::time::Duration::from_secs(60))
    }

    fn write_until(
        term: Term,
        deadline: Instant,
    ) -> (
        PendingWrite,
        oneshot::Receiver<Result<WriteOutcome, NodeError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        (
            PendingWrite {
                term,
                deadline,
                reply: WriteReply::Channel(reply),
            },
            rx,
        )
    }

    fn read() -> (ReadReply, oneshot::Receiver<Result<Term, NodeError>>) {
        oneshot::channel()
    }

    #[test]
    fn a_write_proposed_again_at_its_index_fails_the_earlier_one() {
        let mut w = Waiters::new(8);
        let (first, mut first_rx) = write(1);
        let (second, _second_rx) = write(2);
        w.add_write(5, first);
        w.add_write(5, second);
        assert_eq!(first_rx.try_recv().unwrap(), Err(NodeError::LeaderChanged));
        assert_eq!(w.take_write(5).unwrap().term, 2);
        assert!(w.take_write(5).is_none());
    }

    #[test]
    fn reads_are_served_only_once_their_index_is_applied() {
        let mut w = Waiters::new(8);
        let (a, _) = read();
        let (b, _) = read();
        let ctx_a = w.add_read(a);
        let ctx_b = w.add_read(b);
        w.confirm_read(ctx_a, 3);
        w.confirm_read(ctx_b, 7);
        assert!(w.take_servable_reads(2).is_empty());
        assert_eq!(w.take_servable_reads(5).len(), 1);
        assert_eq!(w.take_servable_reads(7).len(), 1);
        assert!(w.take_servable_reads(100).is_empty());
    }

    #[test]
    fn limits_and_failures() {
        let mut w = Waiters::new(1);
        let (x, mut x_rx) = write(1);
        w.add_write(1, x);
        assert!(w.writes_full());
        let (r, mut r_rx) = read();
        let ctx = w.add_read(r);
        assert!(w.reads_full());
        w.fail_read(ctx, NodeError::ReadFailed);
        assert!(matches!(
            r_rx.try_recv().unwrap(),
            Err(NodeError::ReadFailed)
        ));
        w.fail_all(NodeError::Stopped);
        assert!(matches!(x_rx.try_recv().unwrap(), Err(NodeError::Stopped)));
        assert!(!w.writes_full());
    }

    #[test]
    fn writes_past_their_deadline_fail_as_timed_out_and_the_others_wait() {
        let mut w = Waiters::new(8);
        let now = Instant::now();
        let (early, mut early_rx) = write_until(1, now);
        let (late, mut late_rx) = write_until(1, now + std::time::Duration::from_secs(1));
        w.add_write(1, early);
        w.add_write(2, late);
        w.expire_writes(now);
        assert_eq!(early_rx.try_recv().unwrap(), Err(NodeError::TimedOut));
        assert!(late_rx.try_recv().is_err(), "not yet answered");
        assert!(w.take_write(1).is_none());
        assert!(w.take_write(2).is_some());
    }

    #[test]
    fn a_callback_is_called_once_with_the_answer_and_never_pruned() {
        use std::sync::{Arc, Mutex};
        let answers = Arc::new(Mutex::new(Vec::new()));
        let mut w = Waiters::new(4);
        let now = Instant::now();
        for index in [1, 2] {
            let answers = Arc::clone(&answers);
            let call = move |answer| answers.lock().unwrap().push((index, answer));
            let write = PendingWrite {
                term: 1,
                deadline: now + std::time::Duration::from_secs(index),
                reply: WriteReply::Call(Box::new(call)),
            };
            w.add_write(index, write);
        }
        // Nobody can be seen to have gone: it stays until answered.
        w.prune_abandoned();
        assert!(answers.lock().unwrap().is_empty());
        w.expire_writes(now + std::time::Duration::from_secs(1));
        assert_eq!(*answers.lock().unwrap(), [(1, Err(NodeError::TimedOut))]);
        w.fail_writes(NodeError::LeaderChanged);
        assert_eq!(
            answers.lock().unwrap()[1..],
            [(2, Err(NodeError::LeaderChanged))]
        );
        assert!(w.take_write(2).is_none());
    }

    #[test]
    fn abandoned_waiters_are_pruned() {
        let mut w = Waiters::new(4);
        let (x, x_rx) = write(1);
        w.add_write(1, x);
        drop(x_rx);
        w.prune_abandoned();
        assert!(w.take_write(1).is_none());
    }
}
