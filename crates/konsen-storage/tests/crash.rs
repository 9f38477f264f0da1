//! Crash safety with real processes: a child process appends to the log and
//! applies committed entries in a loop, printing every append it finished
//! (synced) to a pipe; the test SIGKILLs it at random moments, reopens the
//! data dir and checks that
//!
//! * every acknowledged entry and hard state is there, and at most one
//!   unacknowledged append (the one the kill interrupted) is added to them;
//! * the log has no holes and committed entries never change;
//! * the key-value state is exactly the log applied up to the applied index,
//!   at the current revision and at older ones (the history), with the
//!   compactions of the log applied;
//! * every txn (three keys put together, under a compare) is wholly applied
//!   or not at all, now and at every older revision read.
//!
//! The child is this test binary re-executed with [`CHILD_DIR_ENV`] set,
//! running only [`child_process_entry_point`].

mod model;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use konsen_core::storage::Storage;
use konsen_core::{Entry, EntryKind, HardState, Index, Term};
use konsen_storage::{
    Command, Compare, CompareResult, CompareTarget, KeyValue, NodeIdentity, RangeRequest,
    RequestError, RocksStore, StorageError, StorageOptions, Txn, TxnOp,
};
use model::Model;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

/// Set in the child: the data dir to write to.
const CHILD_DIR_ENV: &str = "KONSEN_CRASH_CHILD_DIR";
/// Set in the child: its random seed.
const CHILD_SEED_ENV: &str = "KONSEN_CRASH_CHILD_SEED";
/// Set by a user to replay the parent's choices.
const SEED_ENV: &str = "KONSEN_CRASH_SEED";

const KILLS: usize = 60;
/// The signal `Child::kill` sends on Unix.
const SIGKILL: i32 = 9;
/// The longest a child lives before it is killed.
const CHILD_LIFETIME_MS_MAX: u64 = 150;
/// A child that was somehow not killed stops by itself after this.
const CHILD_DEADLINE: Duration = Duration::from_secs(30);
const APPEND_ENTRIES_MAX: u64 = 16;
const APPLY_ENTRIES_MAX: u64 = 32;
const KEYS: u64 = 24;
/// Txns write groups of [`TXN_GROUP_KEYS`] keys, `txn-G-0..`, always all
/// of a group together.
const TXN_GROUPS: u64 = 6;
const TXN_GROUP_KEYS: u64 = 3;
/// The older revisions read at each check (besides the compacted one and
/// the one before the current one).
const HISTORY_READS: usize = 10;
/// The child flushes its memtables after one append in this many.
const FLUSH_ONE_IN: u32 = 8;

const IDENTITY: NodeIdentity = NodeIdentity {
    cluster_id: 0xc0ffee,
    node_id: 1,
};

/// The entry at `index` written in `term`: a pure function of the two, so
/// the test can check every stored byte. Mostly puts and deletes over a
/// small key space, multi-key txns and compactions, with no-ops,
/// membership entries and garbage mixed in.
fn make_entry(index: Index, term: Term) -> Entry {
    let mut rng = SmallRng::seed_from_u64(index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ term);
    let (kind, data) = match rng.random_range(0..100) {
        0..5 => (EntryKind::Normal, Bytes::new()),
        5..8 => (
            EntryKind::Membership,
            Bytes::from(format!("members@{index}")),
        ),
        8..10 => (
            EntryKind::Normal,
            Bytes::from_static(b"\x01\xeenot a command"),
        ),
        10..60 => {
            let key = format!("key-{:02}", rng.random_range(0..KEYS));
            let padding = "x".repeat(rng.random_range(0..64));
            let value = format!("{index}@{term}{padding}");
            let command = Command::Put {
                key: key.into_bytes(),
                value: value.into(),
                lease: 0,
                prev_kv: rng.random(),
                ignore_value: false,
                ignore_lease: false,
            };
            (EntryKind::Normal, command.encode())
        }
        60..72 => {
            let from = rng.random_range(0..KEYS);
            let key = format!("key-{from:02}").into_bytes();
            let range_end = match rng.random_range(0..3) {
                0 => Vec::new(),
                1 => format!("key-{:02}", from + rng.random_range(1..4)).into_bytes(),
                _ => vec![0],
            };
            let command = Command::DeleteRange {
                key,
                range_end,
                prev_kv: rng.random(),
            };
            (EntryKind::Normal, command.encode())
        }
        72..96 => (
            EntryKind::Normal,
            Command::Txn(make_txn(&mut rng, index, term)).encode(),
        ),
        _ => {
            // Some at or below the compacted revision (refused), most not:
            // the revision grows by about 0.8 per entry.
            let revision = (index / 2) as i64 + rng.random_range(-4..4);
            (EntryKind::Normal, Command::Compact { revision }.encode())
        }
    };
    Entry {
        index,
        term,
        kind,
        data,
    }
}

fn group_key(group: u64, i: u64) -> Vec<u8> {
    format!("txn-{group}-{i}").into_bytes()
}

/// A txn that writes all of one group's keys in whichever branch it takes
/// (with a different value), plus a read and a delete of other keys.
fn make_txn(rng: &mut SmallRng, index: Index, term: Term) -> Txn {
    let group = rng.random_range(0..TXN_GROUPS);
    let puts = |tag: &str| -> Vec<TxnOp> {
        (0..TXN_GROUP_KEYS)
            .map(|i| TxnOp::Put {
                key: group_key(group, i),
                value: Bytes::from(format!("{index}@{term}/{tag}")),
                lease: 0,
                prev_kv: i == 0,
                ignore_value: false,
                ignore_lease: false,
            })
            .collect()
    };
    let target = match rng.random_range(0..3) {
        0 => CompareTarget::Version(rng.random_range(0..4)),
        1 => CompareTarget::Mod(index as i64 / 2),
        _ => CompareTarget::Value(Bytes::from(format!("{}@{term}/then", index - 1))),
    };
    let result = [
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ][rng.random_range(0..4)];
    let mut success = puts("then");
    success.push(TxnOp::Range(RangeRequest {
        key: group_key(group, 0),
        range_end: vec![0],
        ..RangeRequest::default()
    }));
    let mut failure = vec![TxnOp::DeleteRange {
        key: format!("key-{:02}", rng.random_range(0..KEYS)).into_bytes(),
        range_end: Vec::new(),
        prev_kv: true,
    }];
    failure.extend(puts("else"));
    Txn {
        compare: vec![Compare {
            key: group_key(group, rng.random_range(0..TXN_GROUP_KEYS)),
            range_end: Vec::new(),
            result,
            target,
        }],
        success,
        failure,
    }
}

/// Each txn group's keys at one revision: all there with one value and
/// one mod revision, or none there.
fn assert_txns_whole(kvs: &[KeyValue], what: &str) {
    for group in 0..TXN_GROUPS {
        let members: Vec<&KeyValue> = (0..TXN_GROUP_KEYS)
            .filter_map(|i| kvs.iter().find(|kv| kv.key == group_key(group, i)))
            .collect();
        if members.is_empty() {
            continue;
        }
        assert_eq!(
            members.len() as u64,
            TXN_GROUP_KEYS,
            "{what}: txn group {group} half applied: {members:?}"
        );
        assert!(
            members.iter().all(|kv| kv.value == members[0].value
                && kv.mod_revision == members[0].mod_revision
                && kv.version == members[0].version),
            "{what}: txn group {group} half applied: {members:?}"
        );
    }
}

/// One acknowledged append: entries `start..start + count` of `term`, and
/// the hard state written with them.
#[derive(Clone, Copy, Debug)]
struct Ack {
    start: Index,
    count: u64,
    term: Term,
    commit: Index,
}

impl Ack {
    fn line(&self) -> String {
        format!(
            "ack {} {} {} {}\n",
            self.start, self.count, self.term, self.commit
        )
    }

    /// Parses an acknowledgement, which may follow the test harness's own
    /// output on the same line.
    fn parse(line: &str) -> Option<Ack> {
        let at = line.find("ack ")?;
        let mut fields = line[at + 4..].split(' ').map(str::parse::<u64>);
        let mut next = || fields.next()?.ok();
        Some(Ack {
            start: next()?,
            count: next()?,
            term: next()?,
            commit: next()?,
        })
    }
}

/// The child: write until killed. Does nothing in a normal test run.
#[test]
fn child_process_entry_point() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut store =
        RocksStore::open(&dir, IDENTITY, StorageOptions::default()).expect("child: open");
    let hs = store.log.load().expect("child: load").hard_state;
    let (mut term, mut commit) = (hs.term.max(1), hs.commit);
    let mut stdout = std::io::stdout().lock();
    let deadline = Instant::now() + CHILD_DEADLINE;
    while Instant::now() < deadline {
        let last = store.log.last();
        // Now and then a new leader overwrites an uncommitted suffix, or
        // just starts a new term.
        let start = if last > commit && rng.random_ratio(1, 6) {
            term += 1;
            rng.random_range(commit + 1..=last)
        } else {
            if rng.random_ratio(1, 10) {
                term += 1;
            }
            last + 1
        };
        let count = rng.random_range(1..=APPEND_ENTRIES_MAX);
        let entries: Vec<Entry> = (start..start + count)
            .map(|i| make_entry(i, term))
            .collect();
        commit = rng.random_range(commit..=start + count - 1);
        let hs = HardState {
            term,
            vote: Some(IDENTITY.node_id),
            commit,
        };
        store.log.append(Some(hs), &entries).expect("child: append");
        let ack = Ack {
            start,
            count,
            term,
            commit,
        };
        // One write of a short line to a pipe is atomic: the parent reads a
        // whole acknowledgement or none.
        stdout
            .write_all(ack.line().as_bytes())
            .expect("child: report");
        stdout.flush().expect("child: flush");
        while store.kv.applied_index() < commit {
            let lo = store.kv.applied_index() + 1;
            let hi = commit.min(lo + rng.random_range(0..APPLY_ENTRIES_MAX));
            let batch = store.log.entries(lo, hi).expect("child: read committed");
            store.kv.apply(&batch).expect("child: apply");
        }
        // Now and then every memtable goes to table files, which starts a
        // new WAL file and retires the last: from the second flush on, the
        // new one is a retired file written over (WAL recycling), so kills
        // also land in a file that still holds stale records.
        if rng.random_ratio(1, FLUSH_ONE_IN) {
            store.flush().expect("child: flush the memtables");
        }
    }
}

/// What the parent knows was acknowledged: the term of every entry
/// (position i holds index i + 1) and the hard state; and the model of the
/// state machine with the entries applied so far (applied entries are
/// committed, so they never change: each round applies only the new ones).
#[derive(Debug, Default)]
struct Acknowledged {
    terms: Vec<Term>,
    hard_state: HardState,
    model: Model,
    modeled: Index,
}

impl Acknowledged {
    fn record(&mut self, ack: &Ack) {
        self.terms.truncate(ack.start as usize - 1);
        self.terms
            .extend(std::iter::repeat_n(ack.term, ack.count as usize));
        self.hard_state = HardState {
            term: ack.term,
            vote: Some(IDENTITY.node_id),
            commit: ack.commit,
        };
    }
}

/// Reopens the data dir and checks it against what was acknowledged; then
/// takes what is stored as the new baseline.
fn verify(dir: &Path, acked: &mut Acknowledged, round: usize) -> (usize, i64) {
    let store = RocksStore::open(dir, IDENTITY, StorageOptions::default())
        .unwrap_or_else(|e| panic!("round {round}: reopen after kill: {e}"));
    let stored = store
        .log
        .load()
        .unwrap_or_else(|e| panic!("round {round}: load: {e}"));
    let hs = stored.hard_state;
    assert_eq!(stored.purged_index, 0, "round {round}: nothing was purged");
    let mut terms = Vec::with_capacity(stored.entries.len());
    for (position, entry) in stored.entries.iter().enumerate() {
        assert_eq!(
            entry.index,
            position as Index + 1,
            "round {round}: the log has no holes"
        );
        assert_eq!(
            *entry,
            make_entry(entry.index, entry.term),
            "round {round}: entry {} intact",
            entry.index
        );
        assert!(
            entry.term <= hs.term,
            "round {round}: entry {} from a future term",
            entry.index
        );
        if let Some(&previous) = terms.last() {
            assert!(
                entry.term >= previous,
                "round {round}: terms never decrease along the log"
            );
        }
        terms.push(entry.term);
    }
    assert!(
        hs.commit <= terms.len() as Index,
        "round {round}: commit within the log"
    );

    if terms != acked.terms || hs != acked.hard_state {
        // One more append landed than was acknowledged: the log is the
        // acknowledged one with a suffix from past the commit index replaced
        // or extended by at most one batch, in a term not below the
        // acknowledged one, together with its hard state.
        let diverge = terms
            .iter()
            .zip(&acked.terms)
            .take_while(|(a, b)| a == b)
            .count();
        let added = &terms[diverge..];
        assert!(
            !added.is_empty(),
            "round {round}: acknowledged entries {}..={} or hard state {:?} lost (stored {hs:?}, {} entries)",
            diverge + 1,
            acked.terms.len(),
            acked.hard_state,
            terms.len()
        );
        assert!(
            diverge as Index >= acked.hard_state.commit,
            "round {round}: committed entry {} changed (acknowledged terms {:?} {:?}, stored {:?} {hs:?})",
            diverge + 1,
            acked.terms,
            acked.hard_state,
            terms
        );
        assert!(
            added.len() as u64 <= APPEND_ENTRIES_MAX,
            "round {round}: more than one unacknowledged append"
        );
        assert!(
            added.iter().all(|&t| t == hs.term),
            "round {round}: the extra append is in the stored term"
        );
        assert!(
            hs.term >= acked.hard_state.term,
            "round {round}: the term went back"
        );
        assert!(
            hs.commit >= acked.hard_state.commit,
            "round {round}: the commit index went back"
        );
    }

    let applied = store.kv.applied_index();
    assert!(
        applied <= hs.commit,
        "round {round}: applied {applied} beyond commit {}",
        hs.commit
    );
    if applied < acked.modeled {
        // Allowed (the applies are not synced), if not after a mere kill:
        // model again from the start.
        acked.model = Model::new();
        acked.modeled = 0;
    }
    for entry in &stored.entries[acked.modeled as usize..applied as usize] {
        acked.model.apply(entry);
    }
    acked.modeled = applied;
    let model = &acked.model;
    assert_eq!(
        store.kv.revision(),
        model.revision,
        "round {round}: revision at applied index {applied}"
    );
    assert_eq!(
        store.kv.compacted_revision(),
        model.compacted,
        "round {round}: compacted revision at applied index {applied}"
    );
    let everything = |revision| RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..RangeRequest::default()
    };
    let kvs = store.kv.range(&everything(0)).expect("range").kvs;
    assert_eq!(
        kvs,
        model.kvs(),
        "round {round}: state = log applied up to {applied}"
    );
    assert_txns_whole(&kvs, &format!("round {round}, current revision"));
    // The history: the compacted revision, the one before the current one,
    // and a spread of others in between read as the model's.
    let floor = model.compacted.max(1);
    let mut revisions = vec![floor, (model.revision - 1).max(floor)];
    let span = model.revision - floor + 1;
    revisions.extend((0..HISTORY_READS as i64).map(|i| floor + (i * 7919 + round as i64) % span));
    for revision in revisions {
        let kvs = store
            .kv
            .range(&everything(revision))
            .unwrap_or_else(|e| panic!("round {round}: range at revision {revision}: {e}"))
            .kvs;
        assert_eq!(
            kvs,
            model.kvs_at(revision),
            "round {round}: history at revision {revision} = log applied up to {applied}"
        );
        assert_txns_whole(&kvs, &format!("round {round}, revision {revision}"));
    }
    if model.compacted > 1 {
        let below = store.kv.range(&everything(model.compacted - 1));
        assert!(
            matches!(
                below,
                Err(StorageError::Request(RequestError::Compacted { .. }))
            ),
            "round {round}: a read below the compacted revision {}: {below:?}",
            model.compacted
        );
    }
    let txns = stored.entries[..applied as usize]
        .iter()
        .filter(|e| matches!(Command::decode(&e.data), Ok(Command::Txn(_))))
        .count();
    let compacted = model.compacted;

    acked.terms = terms;
    acked.hard_state = hs;
    (txns, compacted)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test seed: {seed} (replay the parent's choices with {SEED_ENV}={seed})");
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = TempDir::new().unwrap();
    // Create the data dir up front, so that no kill lands in its creation
    // (an interrupted creation is refused on restart, by design).
    drop(RocksStore::open(dir.path(), IDENTITY, StorageOptions::default()).unwrap());
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut acked = Acknowledged::default();
    let mut acks_total = 0;
    let (mut txns_applied, mut compacted) = (0, 0);
    for round in 0..KILLS {
        let mut child = Process::new(&exe)
            .args([
                "--exact",
                "child_process_entry_point",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_SEED_ENV, rng.random::<u64>().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| Ack::parse(&line))
                .collect::<Vec<Ack>>()
        });
        std::thread::sleep(Duration::from_millis(
            rng.random_range(0..=CHILD_LIFETIME_MS_MAX),
        ));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "round {round}: the child ran until killed ({status})"
        );
        let acks = reader.join().unwrap();
        acks_total += acks.len();
        for ack in &acks {
            acked.record(ack);
        }
        (txns_applied, compacted) = verify(dir.path(), &mut acked, round);
    }
    println!(
        "{KILLS} kills, {acks_total} acknowledged appends, final log {} entries, \
         {txns_applied} txns applied, compacted at {compacted}, {:.1}s",
        acked.terms.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        acks_total >= 100,
        "the children acknowledged only {acks_total} appends: the test exercised too little"
    );
    assert!(
        txns_applied >= 50 && compacted > 0,
        "{txns_applied} txns applied, compacted at {compacted}: the test exercised too little"
    );
}
