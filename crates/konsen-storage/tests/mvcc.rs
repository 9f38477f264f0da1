//! Multi-version history, txns and compaction against the model of etcd
//! 3.4's MVCC (`model/mod.rs`): random puts, deletes, txns (compares on
//! every target with every result, over keys and ranges, branches holding
//! puts, ranges, deletes and nested txns, refused ones too), compactions
//! (valid or not) and reads at random revisions, through the log, through
//! `KvStore::range` and through a `KvReader` (ranges and read-only txns),
//! in batches of random sizes with a restart in the middle.
//!
//! The tests at the end pin down three details where an earlier konsen
//! answered otherwise than etcd 3.4: the header revision of a historical
//! read, the order of a txn's checks, and a nested txn's op limit.

mod support;

mod model;

use bytes::Bytes;
use konsen_core::storage::Storage;
use konsen_core::{Entry, EntryKind, HardState, Index};
use konsen_storage::{
    ApplyOutcome, Command, Compare, CompareResult, CompareTarget, NodeIdentity, RangeRequest,
    RangeResponse, RequestError, RocksStore, SortOrder, SortTarget, StorageError, StorageOptions,
    Txn, TxnOp, TxnResponse, TxnResult,
};
use model::Model;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tempfile::TempDir;

const IDENTITY: NodeIdentity = NodeIdentity {
    cluster_id: 0xc1,
    node_id: 1,
};

/// The key space: `a` to `e`, small so that compares and duplicates hit.
const KEYS: u8 = 5;
/// Values: few, so that VALUE compares and sorts by value meet ties.
const VALUES: [&[u8]; 4] = [b"", b"x", b"xy", b"y"];
/// Cases of the property test: about 35-40 s in release on the 2-core
/// machine.
const CASES: u32 = 768;

fn open(dir: &TempDir) -> RocksStore {
    RocksStore::open(dir.path(), IDENTITY, StorageOptions::default()).expect("open store")
}

fn key(k: u8) -> Vec<u8> {
    vec![b'a' + k % KEYS]
}

/// etcd's `range_end` for a selector: one key, every key from it on, a
/// span of keys, or an empty range (end before the start).
fn range_end(k: u8, span: u8) -> Vec<u8> {
    let k = k % KEYS;
    match span % 6 {
        0 | 1 => Vec::new(),
        2 => vec![0],
        3 => vec![b'a' + k + 1],
        4 => vec![b'a' + k + 2],
        _ => vec![b'a' + k / 2],
    }
}

/// A revision to read at, from the state: mostly valid ones, some
/// compacted, future or negative.
fn pick_read_revision(sel: u8, m: &Model) -> i64 {
    let floor = m.compacted.max(1);
    let within = floor + i64::from(sel / 16) % (m.revision - floor + 1);
    match sel % 16 {
        0..=3 => 0,
        4 => m.revision,
        5 => m.revision + 1,
        6 if m.compacted > 1 => m.compacted - 1,
        7 => floor,
        8..=13 => within,
        14 => 1 + i64::from(sel / 16) % m.revision,
        15 if sel == 255 => -1,
        _ => within,
    }
}

/// A revision to compact at: mostly valid, some at or below the compacted
/// one, some in the future.
fn pick_compact_revision(sel: u8, m: &Model) -> i64 {
    let span = m.revision - m.compacted;
    match sel % 8 {
        0 => m.compacted,
        1 => m.compacted - 1,
        2 => m.revision + 1,
        3 => m.revision,
        _ if span > 0 => m.compacted + 1 + i64::from(sel / 8) % span,
        _ => m.revision,
    }
}

/// A number to compare a key's field with: the field itself, one off it,
/// zero or something small.
fn pick_number(sel: u8, actual: i64, m: &Model) -> i64 {
    match sel % 6 {
        0 | 1 => actual,
        2 => actual + 1,
        3 => actual - 1,
        4 => 0,
        _ => i64::from(sel / 6) % (m.revision + 2),
    }
}

#[derive(Clone, Debug)]
struct PutIntent {
    key: u8,
    value: u8,
    lease: u8,
    prev_kv: bool,
    /// 0: plain; 1: ignore_value; 2: ignore_lease; 3: both (rare).
    ignore: u8,
}

impl PutIntent {
    fn flags(&self) -> (bool, bool) {
        match self.ignore {
            1 => (true, false),
            2 => (false, true),
            3 => (true, true),
            _ => (false, false),
        }
    }

    fn command(&self) -> Command {
        let (ignore_value, ignore_lease) = self.flags();
        Command::Put {
            key: key(self.key),
            value: if ignore_value {
                Bytes::new()
            } else {
                Bytes::from_static(VALUES[self.value as usize % VALUES.len()])
            },
            lease: if ignore_lease {
                0
            } else {
                i64::from(self.lease % 3)
            },
            prev_kv: self.prev_kv,
            ignore_value,
            ignore_lease,
        }
    }

    fn op(&self) -> TxnOp {
        let Command::Put {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        } = self.command()
        else {
            unreachable!()
        };
        TxnOp::Put {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        }
    }
}

fn put_intent() -> impl Strategy<Value = PutIntent> {
    (
        0..KEYS,
        any::<u8>(),
        any::<u8>(),
        any::<bool>(),
        prop_oneof![12 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8), 1 => Just(3u8)],
    )
        .prop_map(|(key, value, lease, prev_kv, ignore)| PutIntent {
            key,
            value,
            lease,
            prev_kv,
            ignore,
        })
}

#[derive(Clone, Debug)]
struct DeleteIntent {
    key: u8,
    span: u8,
    prev_kv: bool,
}

impl DeleteIntent {
    fn command(&self) -> Command {
        Command::DeleteRange {
            key: key(self.key),
            range_end: range_end(self.key, self.span),
            prev_kv: self.prev_kv,
        }
    }

    fn op(&self) -> TxnOp {
        TxnOp::DeleteRange {
            key: key(self.key),
            range_end: range_end(self.key, self.span),
            prev_kv: self.prev_kv,
        }
    }
}

fn delete_intent() -> impl Strategy<Value = DeleteIntent> {
    (0..KEYS, any::<u8>(), any::<bool>()).prop_map(|(key, span, prev_kv)| DeleteIntent {
        key,
        span,
        prev_kv,
    })
}

#[derive(Clone, Debug)]
struct RangeIntent {
    key: u8,
    span: u8,
    limit: u8,
    revision: u8,
    keys_only: bool,
    count_only: bool,
    order: u8,
    target: u8,
    /// min/max mod, min/max create: 0 mostly, else a revision.
    filters: [u8; 4],
}

impl RangeIntent {
    fn request(&self, m: &Model) -> RangeRequest {
        let filter = |sel: u8| {
            if sel.is_multiple_of(4) {
                1 + i64::from(sel / 4) % m.revision
            } else {
                0
            }
        };
        RangeRequest {
            key: key(self.key),
            range_end: range_end(self.key, self.span),
            limit: match self.limit % 8 {
                0..=3 => 0,
                4 => -1,
                n => i64::from(n - 4),
            },
            revision: pick_read_revision(self.revision, m),
            keys_only: self.keys_only,
            count_only: self.count_only,
            sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend]
                [self.order as usize % 3],
            sort_target: [
                SortTarget::Key,
                SortTarget::Version,
                SortTarget::Create,
                SortTarget::Mod,
                SortTarget::Value,
            ][self.target as usize % 5],
            min_mod_revision: filter(self.filters[0]),
            max_mod_revision: filter(self.filters[1]),
            min_create_revision: filter(self.filters[2]),
            max_create_revision: filter(self.filters[3]),
        }
    }
}

fn range_intent() -> impl Strategy<Value = RangeIntent> {
    (
        (0..KEYS, any::<u8>(), any::<u8>(), any::<u8>()),
        (
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.15),
            any::<u8>(),
            any::<u8>(),
            any::<[u8; 4]>(),
        ),
    )
        .prop_map(
            |((key, span, limit, revision), (keys_only, count_only, order, target, filters))| {
                RangeIntent {
                    key,
                    span,
                    limit,
                    revision,
                    keys_only,
                    count_only,
                    // Half the ranges unsorted.
                    order: if order % 2 == 0 { 0 } else { order / 2 },
                    target: if target % 2 == 0 { 0 } else { target / 2 },
                    filters,
                }
            },
        )
}

#[derive(Clone, Debug)]
struct CompareIntent {
    key: u8,
    span: u8,
    result: u8,
    target: u8,
    n: u8,
}

impl CompareIntent {
    fn compare(&self, m: &Model) -> Compare {
        let k = key(self.key);
        let current = m.keys.get(&k);
        let field = |f: fn(&konsen_storage::KeyValue) -> i64| current.map_or(0, f);
        let target = match self.target % 5 {
            0 => CompareTarget::Version(pick_number(self.n, field(|kv| kv.version), m)),
            1 => CompareTarget::Create(pick_number(self.n, field(|kv| kv.create_revision), m)),
            2 => CompareTarget::Mod(pick_number(self.n, field(|kv| kv.mod_revision), m)),
            3 => CompareTarget::Value(match (self.n % 3, current) {
                (0, Some(kv)) => kv.value.clone(),
                _ => Bytes::from_static(VALUES[self.n as usize / 3 % VALUES.len()]),
            }),
            _ => CompareTarget::Lease(pick_number(self.n, field(|kv| kv.lease), m)),
        };
        Compare {
            key: k,
            // Mostly one key.
            range_end: if self.span.is_multiple_of(3) {
                range_end(self.key, self.span / 3)
            } else {
                Vec::new()
            },
            result: [
                CompareResult::Equal,
                CompareResult::Greater,
                CompareResult::Less,
                CompareResult::NotEqual,
            ][self.result as usize % 4],
            target,
        }
    }
}

fn compare_intent() -> impl Strategy<Value = CompareIntent> {
    (0..KEYS, any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(
        |(key, span, result, target, n)| CompareIntent {
            key,
            span,
            result,
            target,
            n,
        },
    )
}

#[derive(Clone, Debug)]
enum OpIntent {
    Range(RangeIntent),
    Put(PutIntent),
    Delete(DeleteIntent),
    Txn(TxnIntent),
}

#[derive(Clone, Debug)]
struct TxnIntent {
    compare: Vec<CompareIntent>,
    success: Vec<OpIntent>,
    failure: Vec<OpIntent>,
}

impl TxnIntent {
    /// The txn, its compares and revisions taken from `m`, the state it
    /// will be applied to.
    fn txn(&self, m: &Model) -> Txn {
        let ops = |ops: &[OpIntent]| {
            ops.iter()
                .map(|op| match op {
                    OpIntent::Range(r) => TxnOp::Range(r.request(m)),
                    OpIntent::Put(p) => p.op(),
                    OpIntent::Delete(d) => d.op(),
                    OpIntent::Txn(t) => TxnOp::Txn(t.txn(m)),
                })
                .collect()
        };
        Txn {
            compare: self.compare.iter().map(|c| c.compare(m)).collect(),
            success: ops(&self.success),
            failure: ops(&self.failure),
        }
    }
}

fn txn_with(leaf: BoxedStrategy<OpIntent>) -> impl Strategy<Value = TxnIntent> {
    let ops = leaf.prop_recursive(2, 12, 3, |inner| {
        (
            prop::collection::vec(compare_intent(), 0..3),
            prop::collection::vec(inner.clone(), 0..3),
            prop::collection::vec(inner, 0..2),
        )
            .prop_map(|(compare, success, failure)| {
                OpIntent::Txn(TxnIntent {
                    compare,
                    success,
                    failure,
                })
            })
    });
    (
        prop::collection::vec(compare_intent(), 0..4),
        prop::collection::vec(ops.clone(), 0..4),
        prop::collection::vec(ops, 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnIntent {
            compare,
            success,
            failure,
        })
}

fn txn_intent() -> impl Strategy<Value = TxnIntent> {
    txn_with(
        prop_oneof![
            4 => put_intent().prop_map(OpIntent::Put),
            // Mostly single keys: wide deletes make most txns duplicates.
            2 => delete_intent().prop_map(|d| OpIntent::Delete(DeleteIntent { span: if d.span % 3 == 0 { d.span } else { 0 }, ..d })),
            3 => range_intent().prop_map(OpIntent::Range),
        ]
        .boxed(),
    )
}

fn read_txn_intent() -> impl Strategy<Value = TxnIntent> {
    txn_with(range_intent().prop_map(OpIntent::Range).boxed())
}

/// One entry of the log.
#[derive(Clone, Debug)]
enum Step {
    Put(PutIntent),
    Delete(DeleteIntent),
    Txn(TxnIntent),
    Compact(u8),
    /// Grant lease 1 or 2 (ids the puts use), or revoke it.
    LeaseGrant(u8),
    LeaseRevoke(u8),
    /// A leader's no-op.
    Nothing,
}

impl Step {
    fn data(&self, m: &Model) -> Bytes {
        match self {
            Step::Put(p) => p.command().encode(),
            Step::Delete(d) => d.command().encode(),
            Step::Txn(t) => Command::Txn(t.txn(m)).encode(),
            Step::Compact(sel) => Command::Compact {
                revision: pick_compact_revision(*sel, m),
            }
            .encode(),
            Step::LeaseGrant(id) => Command::LeaseGrant {
                id: i64::from(id % 3),
                ttl: 10,
            }
            .encode(),
            Step::LeaseRevoke(id) => Command::LeaseRevoke {
                id: i64::from(id % 3),
            }
            .encode(),
            Step::Nothing => Bytes::new(),
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => put_intent().prop_map(Step::Put),
        2 => delete_intent().prop_map(Step::Delete),
        6 => txn_intent().prop_map(Step::Txn),
        1 => any::<u8>().prop_map(Step::Compact),
        2 => any::<u8>().prop_map(Step::LeaseGrant),
        1 => any::<u8>().prop_map(Step::LeaseRevoke),
        1 => Just(Step::Nothing),
    ]
}

/// A read between batches.
#[derive(Clone, Debug)]
enum Read {
    Range(RangeIntent),
    Txn(TxnIntent),
}

fn read() -> impl Strategy<Value = Read> {
    prop_oneof![
        3 => range_intent().prop_map(Read::Range),
        1 => read_txn_intent().prop_map(Read::Txn),
    ]
}

/// The request error of a read, or a test failure if the store failed.
fn request_result<T>(result: Result<T, StorageError>) -> Result<T, RequestError> {
    result.map_err(|e| match e {
        StorageError::Request(e) => e,
        other => panic!("the store failed: {other}"),
    })
}

fn everything_at(revision: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..RangeRequest::default()
    }
}

/// Every revision from the compacted one to the current one reads as the
/// model's, through the store and a reader; the one below is refused.
fn check_all_revisions(store: &RocksStore, model: &Model) -> Result<(), TestCaseError> {
    let reader = store.kv.reader();
    prop_assert_eq!(store.kv.revision(), model.revision);
    prop_assert_eq!(store.kv.compacted_revision(), model.compacted);
    prop_assert_eq!(
        reader.revisions().unwrap(),
        (model.revision, model.compacted)
    );
    for revision in model.compacted.max(1) - 1..=model.revision + 1 {
        let request = everything_at(revision);
        let want = model.range(&request);
        prop_assert_eq!(
            &request_result(store.kv.range(&request)),
            &want,
            "revision {}",
            revision
        );
        prop_assert_eq!(
            &request_result(reader.range(&request)),
            &want,
            "revision {} through a reader",
            revision
        );
        if let Ok(response) = &want
            && revision > 0
        {
            prop_assert_eq!(&response.kvs, &model.kvs_at(revision));
        }
    }
    Ok(())
}

/// Which outcomes a run produced, to see that the generator exercises
/// what it should.
#[derive(Debug, Default)]
struct Seen {
    txn_succeeded: u64,
    txn_failed: u64,
    txn_nested: u64,
    /// Duplicate key, key not found, compacted, future revision, negative
    /// revision.
    refused: [u64; 5],
    compacted: u64,
    historical_reads: u64,
    /// Puts on a lease that does not exist, grants of one that does, and
    /// the lease id 0.
    lease_refused: u64,
}

fn note(seen: &mut Seen, outcome: &ApplyOutcome) {
    match outcome {
        ApplyOutcome::Txn(t) => {
            if t.succeeded {
                seen.txn_succeeded += 1;
            } else {
                seen.txn_failed += 1;
            }
            if t.responses.iter().any(|r| matches!(r, TxnResponse::Txn(_))) {
                seen.txn_nested += 1;
            }
        }
        ApplyOutcome::Compact(_) => seen.compacted += 1,
        ApplyOutcome::Rejected(
            RequestError::LeaseNotFound
            | RequestError::LeaseExists
            | RequestError::LeaseIdNotPositive(_),
        ) => seen.lease_refused += 1,
        ApplyOutcome::Rejected(e) => {
            let i = match e {
                RequestError::DuplicateKey => 0,
                RequestError::KeyNotFound => 1,
                RequestError::Compacted { .. } => 2,
                RequestError::FutureRevision { .. } => 3,
                RequestError::NegativeRevision(_) => 4,
                other => panic!("unexpected refusal {other:?}"),
            };
            seen.refused[i] += 1;
        }
        _ => {}
    }
}

fn run_case(
    steps: &[Step],
    cuts: &[usize],
    reads: &[Read],
    seen: &mut Seen,
) -> Result<(), TestCaseError> {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    let mut model = Model::new();
    let mut next = 0usize;
    let mut index: Index = 0;
    let mut reads = reads.iter().cycle();
    let mut reopened = false;
    for cut in cuts.iter().cycle() {
        if next >= steps.len() {
            break;
        }
        if !reopened && next >= steps.len() / 2 {
            // Halfway, a restart: the state and history reloaded from disk
            // must go on agreeing with the model.
            reopened = true;
            drop(store);
            store = open(&dir);
            check_all_revisions(&store, &model)?;
        }
        let batch_steps = &steps[next..(next + cut).min(steps.len())];
        next += batch_steps.len();
        // Each command is made from the state it will be applied to: the
        // model after the batch's earlier entries.
        let mut after = model.clone();
        let mut entries = Vec::new();
        let mut expected = Vec::new();
        for step in batch_steps {
            index += 1;
            let entry = Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: step.data(&after),
            };
            expected.push(after.apply(&entry));
            entries.push(entry);
        }
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: index,
        };
        store.log.append(Some(hs), &entries).unwrap();
        let results = store.kv.apply(&entries).unwrap();
        prop_assert_eq!(results.len(), entries.len());
        for ((entry, result), want) in entries.iter().zip(results).zip(&expected) {
            prop_assert_eq!(result.index, entry.index);
            prop_assert_eq!(
                &result.outcome,
                want,
                "entry {}: {:?}",
                entry.index,
                Command::decode(&entry.data).ok()
            );
            note(seen, want);
        }
        model = after;
        prop_assert_eq!(store.kv.revision(), model.revision);
        prop_assert_eq!(store.kv.compacted_revision(), model.compacted);

        let reader = store.kv.reader();
        for read in reads.by_ref().take(3) {
            match read {
                Read::Range(r) => {
                    let request = r.request(&model);
                    let want = model.range(&request);
                    if request.revision > 0 && request.revision < model.revision && want.is_ok() {
                        seen.historical_reads += 1;
                    }
                    prop_assert_eq!(
                        &request_result(store.kv.range(&request)),
                        &want,
                        "{:?}",
                        request
                    );
                    prop_assert_eq!(
                        &request_result(reader.range(&request)),
                        &want,
                        "{:?} through a reader",
                        request
                    );
                }
                Read::Txn(t) => {
                    let txn = t.txn(&model);
                    prop_assert_eq!(
                        request_result(reader.txn(&txn)),
                        model.read_txn(&txn),
                        "{:?}",
                        txn
                    );
                }
            }
        }
    }
    prop_assert_eq!(store.kv.applied_index(), steps.len() as Index);
    check_all_revisions(&store, &model)?;
    Ok(())
}

fn case_strategy() -> impl Strategy<Value = (Vec<Step>, Vec<usize>, Vec<Read>)> {
    (
        prop::collection::vec(step(), 1..100),
        prop::collection::vec(1usize..10, 1..20),
        prop::collection::vec(read(), 1..40),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Every outcome, revision and read agrees with the model of etcd.
    #[test]
    fn mvcc_matches_the_model((steps, cuts, reads) in case_strategy()) {
        let mut seen = Seen::default();
        run_case(&steps, &cuts, &reads, &mut seen)?;
    }
}

/// The generator reaches every kind of outcome: txns both ways, nested,
/// refused for each reason, compactions, historical reads. One fixed
/// seed, so this does not flake.
#[test]
fn the_workload_exercises_everything() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = case_strategy();
    let mut seen = Seen::default();
    for _ in 0..16 {
        let (steps, cuts, reads) = strategy.new_tree(&mut runner).unwrap().current();
        run_case(&steps, &cuts, &reads, &mut seen).unwrap();
    }
    println!("{seen:?}");
    assert!(seen.txn_succeeded > 20 && seen.txn_failed > 20, "{seen:?}");
    assert!(seen.txn_nested > 5, "{seen:?}");
    assert!(seen.refused[..4].iter().all(|&n| n > 2), "{seen:?}");
    assert!(seen.compacted > 5, "{seen:?}");
    assert!(seen.historical_reads > 20, "{seen:?}");
}

fn apply(store: &mut RocksStore, commands: &[Command]) -> Vec<ApplyOutcome> {
    support::apply_committed(store, 1, commands)
}

fn range_op(key: &str, revision: i64) -> TxnOp {
    TxnOp::Range(RangeRequest {
        key: key.into(),
        revision,
        ..RangeRequest::default()
    })
}

/// A txn's writes share one revision, its ranges see its earlier writes
/// and report its revision so far, and a compare against a missing key
/// compares a zero record (VALUE fails).
#[test]
fn txn_revisions_follow_etcd() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    apply(&mut store, &[Command::put("a", "1")]);
    let txn = Txn {
        compare: vec![
            Compare {
                key: b"missing".to_vec(),
                range_end: Vec::new(),
                result: CompareResult::Equal,
                target: CompareTarget::Version(0),
            },
            Compare {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                result: CompareResult::Equal,
                target: CompareTarget::Value(Bytes::from_static(b"1")),
            },
        ],
        success: vec![
            range_op("a", 0),
            TxnOp::DeleteRange {
                key: b"zzz".to_vec(),
                range_end: Vec::new(),
                prev_kv: false,
            },
            TxnOp::Put {
                key: b"b".to_vec(),
                value: Bytes::from_static(b"2"),
                lease: 0,
                prev_kv: false,
                ignore_value: false,
                ignore_lease: false,
            },
            range_op("b", 0),
            TxnOp::DeleteRange {
                key: b"a".to_vec(),
                range_end: Vec::new(),
                prev_kv: true,
            },
        ],
        failure: Vec::new(),
    };
    let outcome = apply(&mut store, &[Command::Txn(txn.clone())]);
    let mut model = Model::new();
    model.execute(&Command::put("a", "1"));
    let want = model.execute(&Command::Txn(txn));
    assert_eq!(outcome, vec![want.clone()]);
    let ApplyOutcome::Txn(TxnResult {
        revision,
        succeeded,
        responses,
    }) = want
    else {
        panic!("{want:?}")
    };
    assert!(succeeded);
    assert_eq!(revision, 3);
    let revisions: Vec<i64> = responses
        .iter()
        .map(|r| match r {
            TxnResponse::Range(r) => r.revision,
            TxnResponse::Put(p) => p.revision,
            TxnResponse::DeleteRange(d) => d.revision,
            TxnResponse::Txn(t) => t.revision,
        })
        .collect();
    assert_eq!(revisions, vec![2, 2, 3, 3, 3]);
    let TxnResponse::Range(b) = &responses[3] else {
        panic!()
    };
    assert_eq!(b.kvs[0].mod_revision, 3);
    // The keys as of before the txn, still readable.
    assert_eq!(
        store.kv.range(&everything_at(2)).unwrap().kvs,
        model.kvs_at(2)
    );
    assert_eq!(store.kv.range(&everything_at(3)).unwrap().kvs, model.kvs());
}

/// A compaction refuses what etcd refuses and keeps what later reads
/// need, also a key deleted before it and written after.
#[test]
fn compaction_keeps_what_reads_at_and_after_it_need() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    let mut model = Model::new();
    let commands = [
        Command::put("a", "1"),           // 2
        Command::put("b", "1"),           // 3
        Command::delete_range("a", ""),   // 4
        Command::put("b", "2"),           // 5
        Command::Compact { revision: 0 }, // refused: compacted
        Command::Compact { revision: 6 }, // refused: future
        Command::Compact { revision: 4 }, // ok
        Command::Compact { revision: 4 }, // refused: compacted
        Command::put("a", "again"),       // 6
        Command::Compact { revision: 5 }, // ok
        Command::delete_range("b", ""),   // 7
        Command::Compact { revision: 7 }, // ok
    ];
    let check = |store: &RocksStore, model: &Model| {
        for revision in 1..=model.revision + 1 {
            let request = everything_at(revision);
            assert_eq!(
                request_result(store.kv.range(&request)),
                model.range(&request),
                "revision {revision}"
            );
        }
    };
    let (before, after) = commands.split_at(10);
    let mut outcomes = apply(&mut store, before);
    let mut want: Vec<ApplyOutcome> = before.iter().map(|c| model.execute(c)).collect();
    assert_eq!(store.kv.compacted_revision(), 5);
    check(&store, &model);
    outcomes.extend(apply(&mut store, after));
    want.extend(after.iter().map(|c| model.execute(c)));
    assert_eq!(outcomes, want);
    assert!(matches!(
        outcomes[4],
        ApplyOutcome::Rejected(RequestError::Compacted { .. })
    ));
    assert!(matches!(
        outcomes[5],
        ApplyOutcome::Rejected(RequestError::FutureRevision { .. })
    ));
    assert!(matches!(outcomes[6], ApplyOutcome::Compact(_)));
    assert_eq!(store.kv.compacted_revision(), 7);
    check(&store, &model);
    drop(store);
    let store = open(&dir);
    assert_eq!(store.kv.compacted_revision(), 7);
    assert_eq!(store.kv.range(&everything_at(7)).unwrap().kvs, model.kvs());
}

/// As etcd 3.4: a range at an old revision reports the current revision
/// in its header (`mvcc/kvstore_txn.go` `rangeKeys` returns `Rev: curRev`,
/// which `apply.go` puts in the header). Inside a txn too.
#[test]
fn a_historical_range_reports_the_current_revision() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    apply(
        &mut store,
        &[Command::put("a", "1"), Command::put("a", "2")],
    );
    let request = RangeRequest {
        key: b"a".to_vec(),
        revision: 2,
        ..RangeRequest::default()
    };
    let mut etcd = Model::new();
    etcd.execute(&Command::put("a", "1"));
    etcd.execute(&Command::put("a", "2"));
    let want = etcd.range(&request).unwrap();
    assert_eq!(want.revision, 3);
    let txn = Txn {
        success: vec![range_op("a", 2)],
        ..Txn::default()
    };
    let want_txn = etcd.read_txn(&txn).unwrap();
    let TxnResponse::Range(RangeResponse { revision: 3, .. }) = want_txn.responses[0] else {
        panic!("{want_txn:?}")
    };
    assert_eq!(store.kv.range(&request).unwrap(), want, "KvStore::range");
    assert_eq!(
        store.kv.reader().range(&request).unwrap(),
        want,
        "KvReader::range"
    );
    assert_eq!(
        store.kv.reader().txn(&txn).unwrap(),
        want_txn,
        "KvReader::txn"
    );
}

/// As etcd 3.4: of a txn whose path holds both a range at a compacted
/// revision and an `ignore_value` put of a missing key (the range first),
/// the error is `KeyNotFound`: every put is checked first
/// (`applierV3backend.Txn`: `checkRequests(.., a.checkPut)` before
/// `checkRequests(.., a.checkRange)`).
#[test]
fn a_txn_checks_its_puts_before_its_ranges() {
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    let commands = [
        Command::put("a", "1"),
        Command::put("a", "2"),
        Command::Compact { revision: 3 },
        Command::Txn(Txn {
            success: vec![
                range_op("a", 2),
                TxnOp::Put {
                    key: b"missing".to_vec(),
                    value: Bytes::new(),
                    lease: 0,
                    prev_kv: false,
                    ignore_value: true,
                    ignore_lease: false,
                },
            ],
            ..Txn::default()
        }),
    ];
    let mut etcd = Model::new();
    let want: Vec<ApplyOutcome> = commands.iter().map(|c| etcd.execute(c)).collect();
    assert_eq!(want[3], ApplyOutcome::Rejected(RequestError::KeyNotFound));
    assert_eq!(apply(&mut store, &commands), want);
}

/// A key put in both branches of a txn (fine: only one runs) counts once
/// one level up, as in etcd 3.4 (a set); a regression test for a bug
/// where the keys were a list with repeats and the second was taken for a
/// duplicate.
#[test]
fn a_key_put_in_both_branches_of_a_doubly_nested_txn_is_no_duplicate() {
    let put = TxnOp::Put {
        key: b"k".to_vec(),
        value: Bytes::from_static(b"v"),
        lease: 0,
        prev_kv: false,
        ignore_value: false,
        ignore_lease: false,
    };
    let inner = Txn {
        success: vec![put.clone()],
        failure: vec![put],
        ..Txn::default()
    };
    let middle = Txn {
        success: vec![TxnOp::Txn(inner)],
        ..Txn::default()
    };
    let txn = Command::Txn(Txn {
        success: vec![TxnOp::Txn(middle)],
        ..Txn::default()
    });
    let mut etcd = Model::new();
    let want = etcd.execute(&txn);
    assert!(matches!(want, ApplyOutcome::Txn(_)), "{want:?}");
    assert_eq!(
        txn.validate(&StorageOptions::default()),
        Ok(()),
        "Command::validate"
    );
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    assert_eq!(apply(&mut store, &[txn]), vec![want], "apply");
}

/// As etcd 3.4, in `Command::validate`: a nested txn gets only the
/// operations its parent leaves (`checkTxnRequest` checks each op with
/// `maxTxnOps - opc`, `opc` the parent's largest list).
#[test]
fn a_nested_txn_gets_the_ops_its_parent_leaves() {
    let put = |k: &str| TxnOp::Put {
        key: k.into(),
        value: Bytes::new(),
        lease: 0,
        prev_kv: false,
        ignore_value: false,
        ignore_lease: false,
    };
    let options = StorageOptions {
        txn_ops_max: 3,
        ..StorageOptions::default()
    };
    // Three ops in the outer branch leave none for the nested txn's two.
    let txn = Command::Txn(Txn {
        success: vec![
            put("a"),
            put("b"),
            TxnOp::Txn(Txn {
                success: vec![put("c"), put("d")],
                ..Txn::default()
            }),
        ],
        ..Txn::default()
    });
    assert!(
        matches!(txn.validate(&options), Err(RequestError::TooManyOps { .. })),
        "{:?}",
        txn.validate(&options)
    );
    // Five leave the nested txn two: enough.
    let options = StorageOptions {
        txn_ops_max: 5,
        ..StorageOptions::default()
    };
    assert_eq!(txn.validate(&options), Ok(()));
}

/// Reads at old revisions from another thread while puts and compactions
/// are applied: each answers the state at its revision exactly, or (when a
/// compaction overtook it) etcd's compacted error; never a wrong or
/// partial state. Reads at the current revision are never refused, and
/// return the state of the revision their header names. Put number `n`
/// (revision `n + 1`) writes `n + 1` to key `KEYS_CONCURRENT[n % 4]`, so
/// the state at any revision is known.
#[test]
fn historical_reads_beside_compactions_are_exact_or_refused() {
    const KEYS_CONCURRENT: [&str; 4] = ["k0", "k1", "k2", "k3"];
    const PUTS: usize = 3000;
    /// Compact to `current - KEEP` every `EVERY` puts.
    const KEEP: i64 = 40;
    const EVERY: usize = 50;
    let dir = TempDir::new().unwrap();
    let mut store = open(&dir);
    apply(&mut store, &[Command::put("k0", "2")]);
    let reader = store.kv.reader();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let (mut exact, mut refused) = (0u32, 0u32);
            let mut pick = 7u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let (current, compacted) = reader.revisions().unwrap();
                if current < 3 {
                    continue;
                }
                // A revision in [compacted - 5, current], some of them
                // about to be compacted.
                pick = pick
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let low = (compacted - 5).max(2);
                let revision = low + (pick >> 33) as i64 % (current - low + 1);
                // Each key's latest put at or before `revision`.
                let state_at = |revision: i64| -> Vec<(Vec<u8>, i64)> {
                    (0..4)
                        .filter_map(|k| {
                            let latest = (2..=revision).rev().find(|r| (r - 2) % 4 == k)?;
                            Some((KEYS_CONCURRENT[k as usize].into(), latest))
                        })
                        .collect()
                };
                let values = |response: &konsen_storage::RangeResponse| -> Vec<(Vec<u8>, i64)> {
                    response
                        .kvs
                        .iter()
                        .map(|kv| {
                            let value = std::str::from_utf8(&kv.value).unwrap();
                            (kv.key.clone(), value.parse().unwrap())
                        })
                        .collect()
                };
                match reader.range(&everything_at(revision)) {
                    Ok(response) => {
                        assert_eq!(
                            values(&response),
                            state_at(revision),
                            "the state at revision {revision}"
                        );
                        exact += 1;
                    }
                    Err(StorageError::Request(RequestError::Compacted { requested, .. })) => {
                        assert_eq!(requested, revision);
                        refused += 1;
                    }
                    Err(e) => panic!("a read at revision {revision} failed: {e}"),
                }
                // A read at the current revision is never refused, and its
                // header names the revision whose state it returns.
                let response = reader.range(&everything_at(0)).unwrap();
                assert_eq!(
                    values(&response),
                    state_at(response.revision),
                    "the current state, read with header revision {}",
                    response.revision
                );
            }
            (exact, refused)
        })
    };
    for n in 1..PUTS {
        let key = KEYS_CONCURRENT[n % 4];
        apply(&mut store, &[Command::put(key, (n as i64 + 2).to_string())]);
        if n % EVERY == 0 {
            let revision = store.kv.revision() - KEEP;
            apply(&mut store, &[Command::Compact { revision }]);
        }
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let (exact, refused) = reads.join().expect("the reading thread");
    assert!(exact > 100, "{exact} exact reads, {refused} refused");
    assert!(store.kv.compacted_revision() > PUTS as i64 / 2);
}
