//! [`Txn`]: etcd's transaction (compares, then one of two lists of
//! operations), its checks before it is proposed, and how it is evaluated.
//!
//! etcd 3.4's semantics, which this follows exactly:
//!
//! * Every compare of a txn, and of each txn nested in the branch taken,
//!   is evaluated against the state before the txn's first operation; the
//!   branches taken (the "path") are fixed before anything runs.
//! * A compare over a range holds when it holds for every key in it. A
//!   compare of a key that does not exist compares a zero record (version,
//!   create, mod and lease 0), except a VALUE compare, which then fails.
//! * Then the checks: a range at a revision the store cannot serve, or a
//!   put with `ignore_value`/`ignore_lease` on a missing key, refuses the
//!   whole txn (nothing is applied).
//! * The operations of the path run in order; a range sees the writes of
//!   the txn before it. Every write gets the same revision, one above the
//!   revision before the txn, and the store's revision rises once, and
//!   only if something changed.
//!
//! The evaluation is written once over [`TxnState`], so the same code
//! applies a txn from the log (`kv.rs`) and serves a read-only one beside
//! the node loop ([`crate::KvReader::txn`]).

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::error::{RequestError, StorageError};
use crate::kv::{DeleteRangeResult, KeyValue, PutResult};
use crate::options::StorageOptions;
use crate::range::{KeyRange, RangeRequest, RangeResponse, finish_range, read_revision};

/// How deep txns may nest (a txn inside a txn's branch is depth 2). etcd
/// has no such limit but the request size; decoding and evaluation recurse,
/// so konsen bounds it.
pub const TXN_DEPTH_MAX: usize = 16;
/// etcd's default `--max-txn-ops`: the most compares, and the most
/// operations in each branch, of one txn.
pub const TXN_OPS_MAX_DEFAULT: usize = 128;

/// etcd `TxnRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// etcd `Compare`: does the key (or every key in `[key, range_end)`)
/// stand in `result` to `target`?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub result: CompareResult,
    pub target: CompareTarget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What is compared, and the value it is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Bytes),
    Lease(i64),
}

/// One operation of a txn's branch (etcd `RequestOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Range(RangeRequest),
    /// As [`crate::Command::Put`].
    Put {
        key: Vec<u8>,
        value: Bytes,
        lease: i64,
        prev_kv: bool,
        ignore_value: bool,
        ignore_lease: bool,
    },
    /// As [`crate::Command::DeleteRange`].
    DeleteRange {
        key: Vec<u8>,
        range_end: Vec<u8>,
        prev_kv: bool,
    },
    Txn(Txn),
}

/// etcd `TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResult {
    /// The revision after the txn (the header revision).
    pub revision: i64,
    pub succeeded: bool,
    /// One per operation of the branch taken.
    pub responses: Vec<TxnResponse>,
}

/// etcd `ResponseOp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnResponse {
    Range(RangeResponse),
    Put(PutResult),
    DeleteRange(DeleteRangeResult),
    Txn(TxnResult),
}

impl Txn {
    /// Whether no branch, at any depth, writes: such a txn is served like a
    /// read, not through the log (etcd's `isTxnReadonly`).
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(|op| match op {
            TxnOp::Range(_) => true,
            TxnOp::Put { .. } | TxnOp::DeleteRange { .. } => false,
            TxnOp::Txn(t) => t.is_read_only(),
        })
    }

    /// etcd's checks before a txn is proposed (`checkTxnRequest`,
    /// `checkIntervals`), plus konsen's depth and size limits. Returns the
    /// bytes of keys and values it carries.
    pub(crate) fn validate(&self, options: &StorageOptions) -> Result<usize, RequestError> {
        let size = self.validate_at(1, options.txn_ops_max)?;
        self.check_duplicates()?;
        Ok(size)
    }

    /// `max`: the operations this level may hold. A nested txn gets what
    /// its parent's longest list leaves (etcd's `maxTxnOps - opc`).
    fn validate_at(&self, depth: usize, max: usize) -> Result<usize, RequestError> {
        if depth > TXN_DEPTH_MAX {
            return Err(RequestError::TxnTooDeep { max: TXN_DEPTH_MAX });
        }
        let count = self
            .compare
            .len()
            .max(self.success.len())
            .max(self.failure.len());
        if count > max {
            return Err(RequestError::TooManyOps { count, max });
        }
        let mut size = 0;
        for c in &self.compare {
            if c.key.is_empty() {
                return Err(RequestError::EmptyKey);
            }
            size += c.key.len() + c.range_end.len();
            if let CompareTarget::Value(v) = &c.target {
                size += v.len();
            }
        }
        for op in self.success.iter().chain(&self.failure) {
            size += match op {
                TxnOp::Range(r) => {
                    if r.key.is_empty() {
                        return Err(RequestError::EmptyKey);
                    }
                    if r.revision < 0 {
                        return Err(RequestError::NegativeRevision(r.revision));
                    }
                    r.key.len() + r.range_end.len()
                }
                TxnOp::Put {
                    key,
                    value,
                    lease,
                    ignore_value,
                    ignore_lease,
                    ..
                } => {
                    if key.is_empty() {
                        return Err(RequestError::EmptyKey);
                    }
                    if *ignore_value && !value.is_empty() {
                        return Err(RequestError::ValueProvided);
                    }
                    if *ignore_lease && *lease != 0 {
                        return Err(RequestError::LeaseProvided);
                    }
                    key.len() + value.len()
                }
                TxnOp::DeleteRange { key, range_end, .. } => {
                    if key.is_empty() {
                        return Err(RequestError::EmptyKey);
                    }
                    key.len() + range_end.len()
                }
                TxnOp::Txn(t) => t.validate_at(depth + 1, max - count)?,
            };
        }
        Ok(size)
    }

    /// etcd's rule: no key is put twice, nor put and deleted, on any one
    /// path through the txn (a key put in both branches of a nested txn is
    /// fine: only one runs). Deterministic, so apply checks it again.
    pub(crate) fn check_duplicates(&self) -> Result<(), RequestError> {
        check_intervals(&self.success)?;
        check_intervals(&self.failure)?;
        Ok(())
    }
}

/// The keys put and the ranges deleted by `ops` on any path, or
/// [`RequestError::DuplicateKey`] (etcd's `checkIntervals`).
fn check_intervals(ops: &[TxnOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<KeyRange>), RequestError> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::DeleteRange { key, range_end, .. } => {
                Some(KeyRange::new(key.clone(), range_end.clone()))
            }
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange], key: &[u8]| dels.iter().any(|r| r.contains(key));
    // A set: a key a nested txn puts in both of its branches counts once.
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops {
        let TxnOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(RequestError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            // A key from the other branch may repeat: only one runs.
            if (puts.contains(&k) && !puts_then.contains(&k)) || deleted(&dels, &k) {
                return Err(RequestError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let TxnOp::Put { key, .. } = op else { continue };
        if puts.contains(key) || deleted(&dels, key) {
            return Err(RequestError::DuplicateKey);
        }
        puts.insert(key.clone());
    }
    Ok((puts, dels))
}

/// The state a txn is evaluated against: the applied state (a reader's
/// view), or that plus the writes of the batch being applied.
pub(crate) trait TxnState {
    /// The current revision, with everything written so far.
    fn revision(&self) -> i64;
    fn compacted(&self) -> i64;
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError>;
    /// The keys in `range` now, sorted, values included.
    fn scan(&self, range: &KeyRange) -> Result<Vec<KeyValue>, StorageError>;
    /// The keys in `range` at `revision` (below the current one).
    fn scan_at(&self, range: &KeyRange, revision: i64) -> Result<Vec<KeyValue>, StorageError>;
    /// Whether lease `id` exists now.
    fn lease_exists(&self, id: i64) -> bool;
}

/// The branches a txn takes: whether its compares held, and the same for
/// each txn nested in the branch taken, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TxnPath {
    pub succeeded: bool,
    pub nested: Vec<TxnPath>,
}

impl TxnPath {
    /// The path of `txn` against `state` (which no operation has changed
    /// yet).
    pub(crate) fn decide(state: &impl TxnState, txn: &Txn) -> Result<TxnPath, StorageError> {
        let mut succeeded = true;
        for c in &txn.compare {
            if !compare_holds(state, c)? {
                succeeded = false;
                break;
            }
        }
        let mut nested = Vec::new();
        for op in branch(txn, succeeded) {
            if let TxnOp::Txn(t) = op {
                nested.push(TxnPath::decide(state, t)?);
            }
        }
        Ok(TxnPath { succeeded, nested })
    }
}

/// The operations of the branch `succeeded` picks.
pub(crate) fn branch(txn: &Txn, succeeded: bool) -> &[TxnOp] {
    if succeeded {
        &txn.success
    } else {
        &txn.failure
    }
}

/// Whether compare `c` holds in `state` (etcd's `applyCompare`).
fn compare_holds(state: &impl TxnState, c: &Compare) -> Result<bool, StorageError> {
    let kvs = if c.range_end.is_empty() {
        state.get(&c.key)?.into_iter().collect()
    } else {
        state.scan(&KeyRange::new(c.key.clone(), c.range_end.clone()))?
    };
    if kvs.is_empty() {
        if matches!(c.target, CompareTarget::Value(_)) {
            return Ok(false);
        }
        let zero = KeyValue {
            key: c.key.clone(),
            value: Bytes::new(),
            create_revision: 0,
            mod_revision: 0,
            version: 0,
            lease: 0,
        };
        return Ok(compare_kv(c, &zero));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value.as_ref().cmp(v.as_ref()),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// etcd's checks on the path before anything runs: an `ignore_*` put of
/// a missing key, or a range at a revision that cannot be served, refuses
/// the whole txn. As etcd (`applierV3backend.Txn`), every put on the path
/// is checked first, then every range, so the error does not depend on
/// their order.
pub(crate) fn check_path(
    state: &impl TxnState,
    txn: &Txn,
    path: &TxnPath,
) -> Result<Result<(), RequestError>, StorageError> {
    for check in [PathCheck::Puts, PathCheck::Ranges] {
        if let Err(e) = check_path_for(state, txn, path, check)? {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// Which operations one pass of [`check_path`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathCheck {
    Puts,
    Ranges,
}

fn check_path_for(
    state: &impl TxnState,
    txn: &Txn,
    path: &TxnPath,
    check: PathCheck,
) -> Result<Result<(), RequestError>, StorageError> {
    let mut nested = path.nested.iter();
    for op in branch(txn, path.succeeded) {
        match op {
            TxnOp::Range(r) => {
                if check == PathCheck::Ranges
                    && let Err(e) = read_revision(r.revision, state.revision(), state.compacted())
                {
                    return Ok(Err(e));
                }
            }
            TxnOp::Put {
                key,
                lease,
                ignore_value,
                ignore_lease,
                ..
            } => {
                if check == PathCheck::Puts
                    && (*ignore_value || *ignore_lease)
                    && state.get(key)?.is_none()
                {
                    return Ok(Err(RequestError::KeyNotFound));
                }
                if check == PathCheck::Puts
                    && *lease != 0
                    && !*ignore_lease
                    && !state.lease_exists(*lease)
                {
                    return Ok(Err(RequestError::LeaseNotFound));
                }
            }
            TxnOp::DeleteRange { .. } => {}
            TxnOp::Txn(t) => {
                let p = nested
                    .next()
                    .expect("txn path invariant: one path per nested txn");
                if let Err(e) = check_path_for(state, t, p, check)? {
                    return Ok(Err(e));
                }
            }
        }
    }
    Ok(Ok(()))
}

/// A range inside a txn (or a read-only txn), against `state`.
pub(crate) fn txn_range(
    state: &impl TxnState,
    request: &RangeRequest,
) -> Result<RangeResponse, StorageError> {
    let current = state.revision();
    let revision = read_revision(request.revision, current, state.compacted())?;
    let range = KeyRange::new(request.key.clone(), request.range_end.clone());
    let kvs = if revision < current {
        state.scan_at(&range, revision)?
    } else {
        state.scan(&range)?
    };
    // The header reports the current revision, also for a read at an
    // older one (etcd's `rangeKeys`: `Rev: curRev`).
    Ok(finish_range(kvs, request, current))
}

/// Runs a read-only txn's path against `state`.
pub(crate) fn run_read_only(
    state: &impl TxnState,
    txn: &Txn,
    path: &TxnPath,
) -> Result<TxnResult, StorageError> {
    let mut nested = path.nested.iter();
    let mut responses = Vec::new();
    for op in branch(txn, path.succeeded) {
        responses.push(match op {
            TxnOp::Range(r) => TxnResponse::Range(txn_range(state, r)?),
            TxnOp::Txn(t) => {
                let p = nested
                    .next()
                    .expect("txn path invariant: one path per nested txn");
                TxnResponse::Txn(run_read_only(state, t, p)?)
            }
            TxnOp::Put { .. } | TxnOp::DeleteRange { .. } => {
                panic!("read-only txn invariant: a read-only txn holds a write")
            }
        });
    }
    Ok(TxnResult {
        revision: state.revision(),
        succeeded: path.succeeded,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: Bytes::from_static(b"v"),
            lease: 0,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        }
    }

    fn del(key: &str, end: &str) -> TxnOp {
        TxnOp::DeleteRange {
            key: key.into(),
            range_end: end.into(),
            prev_kv: false,
        }
    }

    fn txn(success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Txn {
        Txn {
            compare: Vec::new(),
            success,
            failure,
        }
    }

    #[test]
    fn duplicates_follow_etcd() {
        let dup = Err(RequestError::DuplicateKey);
        assert_eq!(
            txn(vec![put("a"), put("a")], vec![]).check_duplicates(),
            dup
        );
        assert_eq!(
            txn(vec![put("b"), del("a", "c")], vec![]).check_duplicates(),
            dup
        );
        assert_eq!(
            txn(vec![del("a", ""), put("a")], vec![]).check_duplicates(),
            dup
        );
        // Two branches are two paths.
        assert_eq!(
            txn(vec![put("a")], vec![put("a")]).check_duplicates(),
            Ok(())
        );
        // A nested txn's two branches may put the same key...
        let nested = TxnOp::Txn(txn(vec![put("a")], vec![put("a")]));
        assert_eq!(txn(vec![nested.clone()], vec![]).check_duplicates(), Ok(()));
        // ...but not one the outer level puts too.
        assert_eq!(txn(vec![nested, put("a")], vec![]).check_duplicates(), dup);
        // Deletes may overlap each other.
        assert_eq!(
            txn(vec![del("a", "c"), del("b", "d")], vec![]).check_duplicates(),
            Ok(())
        );
    }

    #[test]
    fn limits_are_checked() {
        let options = StorageOptions {
            txn_ops_max: 2,
            ..StorageOptions::default()
        };
        assert_eq!(
            txn(vec![put("a"), put("b"), put("c")], vec![]).validate(&options),
            Err(RequestError::TooManyOps { count: 3, max: 2 })
        );
        let mut deep = txn(vec![put("a")], vec![]);
        for _ in 0..TXN_DEPTH_MAX {
            deep = txn(vec![TxnOp::Txn(deep)], vec![]);
        }
        // With room for every level's op (each level leaves one fewer).
        assert_eq!(
            deep.validate(&StorageOptions::default()),
            Err(RequestError::TxnTooDeep { max: TXN_DEPTH_MAX })
        );
        let empty_compare = Txn {
            compare: vec![Compare {
                key: Vec::new(),
                range_end: Vec::new(),
                result: CompareResult::Equal,
                target: CompareTarget::Version(1),
            }],
            ..Txn::default()
        };
        assert_eq!(
            empty_compare.validate(&options),
            Err(RequestError::EmptyKey)
        );
        let negative = txn(
            vec![TxnOp::Range(RangeRequest {
                key: b"a".to_vec(),
                revision: -1,
                ..RangeRequest::default()
            })],
            vec![],
        );
        assert_eq!(
            negative.validate(&options),
            Err(RequestError::NegativeRevision(-1))
        );
    }

    #[test]
    fn read_only_means_no_write_on_any_branch() {
        let range = TxnOp::Range(RangeRequest {
            key: b"a".to_vec(),
            ..RangeRequest::default()
        });
        assert!(txn(vec![range.clone()], vec![range.clone()]).is_read_only());
        assert!(!txn(vec![range.clone()], vec![put("a")]).is_read_only());
        let nested = TxnOp::Txn(txn(vec![], vec![del("a", "")]));
        assert!(!txn(vec![range, nested], vec![]).is_read_only());
    }
}
