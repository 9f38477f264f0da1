//! A deliberately naive model of the key-value state machine: etcd 3.4's
//! MVCC as its documentation and its source describe it
//! (`etcdserver/apply.go`, `mvcc/kvstore_txn.go`,
//! `etcdserver/api/v3rpc/key.go` on `release-3.4`), written independently
//! of the implementation. The tests compare the real store against it.
//! Shared by the property tests (`kv.rs`, `mvcc.rs`), the snapshot test
//! and the crash test.
//!
//! Naive on purpose: after every revision the whole key -> record map is
//! kept, so a read at revision `r` is a lookup of `history[r]`; nothing is
//! ever dropped, a compaction only raises the revision below which reads
//! are refused.

#![allow(dead_code)] // every test binary uses a different part of it

use std::collections::BTreeMap;

use bytes::Bytes;
use konsen_core::{Entry, EntryKind};
use konsen_storage::{
    ApplyOutcome, Command, CompactResult, Compare, CompareResult, CompareTarget, DeleteRangeResult,
    KeyValue, LEASE_TTL_MAX, LeaseGrantResult, LeaseRevokeResult, PutResult, REVISION_INITIAL,
    RangeRequest, RangeResponse, RequestError, SortOrder, SortTarget, Txn, TxnOp, TxnResponse,
    TxnResult,
};

/// Every live key at one revision.
pub type Keys = BTreeMap<Vec<u8>, KeyValue>;

/// The store's state: the revision, every live key, and every revision's
/// keys since the first.
#[derive(Clone, Debug)]
pub struct Model {
    pub revision: i64,
    /// Reads below this revision are refused; 0 before any compaction.
    pub compacted: i64,
    /// The keys now (the same as `history[revision]`).
    pub keys: Keys,
    /// Revision -> every live key after it, for every revision from 1.
    pub history: BTreeMap<i64, Keys>,
    /// The leases that exist, with their TTLs.
    pub leases: BTreeMap<i64, i64>,
}

/// A request being applied: the revision before it, the keys as it left
/// them so far, and whether it changed anything yet.
struct Scratch {
    start: i64,
    keys: Keys,
    changed: bool,
}

impl Scratch {
    /// The revision the request's operations see and report (etcd's
    /// `beginRev + 1` once something changed).
    fn revision(&self) -> i64 {
        self.start + i64::from(self.changed)
    }

    /// A put, its checks passed: at `start + 1`.
    fn put(
        &mut self,
        key: &[u8],
        value: &Bytes,
        lease: i64,
        prev_kv: bool,
        ignore_value: bool,
        ignore_lease: bool,
    ) -> PutResult {
        let revision = self.start + 1;
        let prev = self.keys.get(key).cloned();
        let existing = || {
            prev.clone()
                .expect("model: ignore_value/ignore_lease put of a missing key got through")
        };
        let kv = KeyValue {
            key: key.to_vec(),
            value: if ignore_value {
                existing().value
            } else {
                value.clone()
            },
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
            lease: if ignore_lease {
                existing().lease
            } else {
                lease
            },
        };
        self.keys.insert(key.to_vec(), kv);
        self.changed = true;
        PutResult {
            revision,
            prev_kv: if prev_kv { prev } else { None },
        }
    }

    fn delete(&mut self, key: &[u8], range_end: &[u8], prev_kv: bool) -> DeleteRangeResult {
        let doomed: Vec<KeyValue> = self
            .keys
            .values()
            .filter(|kv| Model::in_range(key, range_end, &kv.key))
            .cloned()
            .collect();
        for kv in &doomed {
            self.keys.remove(&kv.key);
        }
        if !doomed.is_empty() {
            self.changed = true;
        }
        DeleteRangeResult {
            revision: self.revision(),
            deleted: doomed.len() as i64,
            prev_kvs: if prev_kv { doomed } else { Vec::new() },
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    /// A fresh store.
    pub fn new() -> Self {
        Model {
            revision: REVISION_INITIAL,
            compacted: 0,
            keys: Keys::new(),
            history: BTreeMap::from([(REVISION_INITIAL, Keys::new())]),
            leases: BTreeMap::new(),
        }
    }

    /// Whether `k` is selected by etcd's `(key, range_end)`: empty
    /// `range_end` is the one key, `[0]` every key from `key` on.
    pub fn in_range(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
        if range_end.is_empty() {
            k == key
        } else if range_end == [0] {
            k >= key
        } else {
            k >= key && k < range_end
        }
    }

    /// Every live key, sorted.
    pub fn kvs(&self) -> Vec<KeyValue> {
        self.keys.values().cloned().collect()
    }

    /// Every key live at `revision` (which must be between 1 and the
    /// current one), sorted; compaction does not matter here.
    pub fn kvs_at(&self, revision: i64) -> Vec<KeyValue> {
        self.history[&revision].values().cloned().collect()
    }

    /// Applies one entry, returning what the store should report.
    pub fn apply(&mut self, entry: &Entry) -> ApplyOutcome {
        if entry.kind == EntryKind::Membership || entry.data.is_empty() {
            return ApplyOutcome::Empty;
        }
        match Command::decode(&entry.data) {
            Ok(command) => self.execute(&command),
            Err(e) => ApplyOutcome::Rejected(RequestError::Decode(e)),
        }
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            start: self.revision,
            keys: self.keys.clone(),
            changed: false,
        }
    }

    /// Takes in what a request did: a new revision if it changed anything.
    fn finish(&mut self, scratch: Scratch) {
        if scratch.changed {
            self.revision = scratch.start + 1;
            self.keys = scratch.keys;
            self.history.insert(self.revision, self.keys.clone());
        }
    }

    /// Applies one command.
    pub fn execute(&mut self, command: &Command) -> ApplyOutcome {
        match command {
            Command::Put {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            } => {
                if key.is_empty() {
                    return ApplyOutcome::Rejected(RequestError::EmptyKey);
                }
                if (*ignore_value || *ignore_lease) && !self.keys.contains_key(key) {
                    return ApplyOutcome::Rejected(RequestError::KeyNotFound);
                }
                if *lease != 0 && !*ignore_lease && !self.leases.contains_key(lease) {
                    return ApplyOutcome::Rejected(RequestError::LeaseNotFound);
                }
                let mut s = self.scratch();
                let put = s.put(key, value, *lease, *prev_kv, *ignore_value, *ignore_lease);
                self.finish(s);
                ApplyOutcome::Put(put)
            }
            Command::DeleteRange {
                key,
                range_end,
                prev_kv,
            } => {
                if key.is_empty() {
                    return ApplyOutcome::Rejected(RequestError::EmptyKey);
                }
                let mut s = self.scratch();
                let deleted = s.delete(key, range_end, *prev_kv);
                self.finish(s);
                ApplyOutcome::DeleteRange(deleted)
            }
            Command::Txn(txn) => match self.txn(txn) {
                Ok(result) => ApplyOutcome::Txn(result),
                Err(e) => ApplyOutcome::Rejected(e),
            },
            Command::Compact { revision } => {
                let revision = *revision;
                if revision <= self.compacted {
                    return ApplyOutcome::Rejected(RequestError::Compacted {
                        requested: revision,
                        compacted: self.compacted,
                    });
                }
                if revision > self.revision {
                    return ApplyOutcome::Rejected(RequestError::FutureRevision {
                        requested: revision,
                        current: self.revision,
                    });
                }
                self.compacted = revision;
                ApplyOutcome::Compact(CompactResult {
                    revision: self.revision,
                })
            }
            &Command::LeaseGrant { id, ttl } => {
                if id <= 0 {
                    return ApplyOutcome::Rejected(RequestError::LeaseIdNotPositive(id));
                }
                if ttl <= 0 {
                    return ApplyOutcome::Rejected(RequestError::LeaseTtlNotPositive(ttl));
                }
                if ttl > LEASE_TTL_MAX {
                    return ApplyOutcome::Rejected(RequestError::LeaseTtlTooLarge {
                        ttl,
                        max: LEASE_TTL_MAX,
                    });
                }
                if self.leases.contains_key(&id) {
                    return ApplyOutcome::Rejected(RequestError::LeaseExists);
                }
                self.leases.insert(id, ttl);
                ApplyOutcome::LeaseGrant(LeaseGrantResult {
                    id,
                    ttl,
                    revision: self.revision,
                })
            }
            &Command::LeaseRevoke { id } => {
                if self.leases.remove(&id).is_none() {
                    return ApplyOutcome::Rejected(RequestError::LeaseNotFound);
                }
                let mut s = self.scratch();
                let doomed: Vec<Vec<u8>> = s
                    .keys
                    .values()
                    .filter(|kv| kv.lease == id)
                    .map(|kv| kv.key.clone())
                    .collect();
                for key in &doomed {
                    s.keys.remove(key);
                }
                s.changed = !doomed.is_empty();
                self.finish(s);
                ApplyOutcome::LeaseRevoke(LeaseRevokeResult {
                    id,
                    revision: self.revision,
                    deleted: doomed.len() as i64,
                })
            }
        }
    }

    /// The revision a read of `requested` sees, or the error: negative is
    /// refused (konsen; etcd 3.4 reads the current revision), above the
    /// current one is a future revision, 0 is the current one, below the
    /// compacted one is compacted (reading at it is fine).
    fn read_revision(&self, requested: i64) -> Result<i64, RequestError> {
        if requested < 0 {
            return Err(RequestError::NegativeRevision(requested));
        }
        if requested > self.revision {
            return Err(RequestError::FutureRevision {
                requested,
                current: self.revision,
            });
        }
        let revision = if requested == 0 {
            self.revision
        } else {
            requested
        };
        if revision < self.compacted {
            return Err(RequestError::Compacted {
                requested,
                compacted: self.compacted,
            });
        }
        Ok(revision)
    }

    /// A range read outside any txn (`KvStore::range`).
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, RequestError> {
        if request.key.is_empty() {
            return Err(RequestError::EmptyKey);
        }
        let at = self.read_revision(request.revision)?;
        // etcd's header revision: the current one, whatever was read.
        Ok(answer(&self.history[&at], request, self.revision))
    }

    /// A read-only txn served beside the log (`KvReader::txn`): the same
    /// evaluation as through the log, and it changes nothing.
    pub fn read_txn(&self, txn: &Txn) -> Result<TxnResult, RequestError> {
        assert!(txn.is_read_only(), "model: read_txn of a txn that writes");
        let path = self.path(txn);
        self.check(txn, &path)?;
        let mut s = self.scratch();
        let result = self.run(&mut s, txn, &mut path.into_iter());
        assert!(!s.changed);
        Ok(result)
    }

    /// A txn through the log.
    fn txn(&mut self, txn: &Txn) -> Result<TxnResult, RequestError> {
        check_intervals(&txn.success)?;
        check_intervals(&txn.failure)?;
        let path = self.path(txn);
        self.check(txn, &path)?;
        let mut s = self.scratch();
        let result = self.run(&mut s, txn, &mut path.into_iter());
        self.finish(s);
        Ok(result)
    }

    /// etcd's `compareToPath`: whether each txn on the path succeeded, in
    /// pre-order, all against the state before the txn.
    fn path(&self, txn: &Txn) -> Vec<bool> {
        fn walk(keys: &Keys, txn: &Txn, out: &mut Vec<bool>) {
            let succeeded = txn.compare.iter().all(|c| holds(keys, c));
            out.push(succeeded);
            let ops = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            for op in ops {
                if let TxnOp::Txn(t) = op {
                    walk(keys, t, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.keys, txn, &mut out);
        out
    }

    /// The operations (not txns) on `path`, in the order they run.
    fn path_ops<'t>(txn: &'t Txn, path: &mut impl Iterator<Item = bool>, out: &mut Vec<&'t TxnOp>) {
        let succeeded = path.next().expect("model: path too short");
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            match op {
                TxnOp::Txn(t) => Self::path_ops(t, path, out),
                other => out.push(other),
            }
        }
    }

    /// The checks that refuse a txn whole before anything runs, against
    /// the state before it.
    fn check(&self, txn: &Txn, path: &[bool]) -> Result<(), RequestError> {
        let mut ops = Vec::new();
        Self::path_ops(txn, &mut path.iter().copied(), &mut ops);
        let check_put = |op: &TxnOp| match op {
            TxnOp::Put {
                key,
                ignore_value,
                ignore_lease,
                ..
            } if (*ignore_value || *ignore_lease) && !self.keys.contains_key(key) => {
                Err(RequestError::KeyNotFound)
            }
            TxnOp::Put {
                lease,
                ignore_lease,
                ..
            } if *lease != 0 && !*ignore_lease && !self.leases.contains_key(lease) => {
                Err(RequestError::LeaseNotFound)
            }
            _ => Ok(()),
        };
        let check_range = |op: &TxnOp| match op {
            TxnOp::Range(r) => self.read_revision(r.revision).map(|_| ()),
            _ => Ok(()),
        };
        // etcd checks every put on the path first, then every range.
        for op in &ops {
            check_put(op)?;
        }
        for op in &ops {
            check_range(op)?;
        }
        Ok(())
    }

    /// Runs the branch `path` picks, in order; ranges see the writes
    /// before them.
    fn run(&self, s: &mut Scratch, txn: &Txn, path: &mut impl Iterator<Item = bool>) -> TxnResult {
        let succeeded = path.next().expect("model: path too short");
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::new();
        for op in ops {
            responses.push(match op {
                TxnOp::Range(r) => {
                    let keys = if r.revision == 0 {
                        &s.keys
                    } else {
                        // Checked: at most the revision before the txn.
                        &self.history[&r.revision]
                    };
                    TxnResponse::Range(answer(keys, r, s.revision()))
                }
                TxnOp::Put {
                    key,
                    value,
                    lease,
                    prev_kv,
                    ignore_value,
                    ignore_lease,
                } => TxnResponse::Put(s.put(
                    key,
                    value,
                    *lease,
                    *prev_kv,
                    *ignore_value,
                    *ignore_lease,
                )),
                TxnOp::DeleteRange {
                    key,
                    range_end,
                    prev_kv,
                } => TxnResponse::DeleteRange(s.delete(key, range_end, *prev_kv)),
                // etcd 3.4 leaves a nested txn's header empty (revision 0);
                // konsen reports the revision so far, like the other
                // responses inside a txn.
                TxnOp::Txn(t) => TxnResponse::Txn(self.run(s, t, path)),
            });
        }
        TxnResult {
            revision: s.revision(),
            succeeded,
            responses,
        }
    }
}

/// etcd's `applyCompare`: over a range, every key must satisfy it; no key
/// at all compares as a zero record, except that a VALUE compare fails.
fn holds(keys: &Keys, c: &Compare) -> bool {
    let matching: Vec<&KeyValue> = keys
        .values()
        .filter(|kv| Model::in_range(&c.key, &c.range_end, &kv.key))
        .collect();
    if matching.is_empty() {
        if let CompareTarget::Value(_) = c.target {
            return false;
        }
        let zero = KeyValue {
            key: c.key.clone(),
            value: Bytes::new(),
            create_revision: 0,
            mod_revision: 0,
            version: 0,
            lease: 0,
        };
        return compare_one(&zero, c);
    }
    matching.iter().all(|kv| compare_one(kv, c))
}

fn compare_one(kv: &KeyValue, c: &Compare) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value[..].cmp(&v[..]),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// A deleted interval: (key, range_end).
type Interval = (Vec<u8>, Vec<u8>);

/// etcd's `checkIntervals` (`v3rpc/key.go`), per branch: no key put twice
/// on one path, nor put and deleted. Nested txns first: the keys each of
/// their branches puts against what this level's deletes and the earlier
/// nested txns put (a key in both branches of one nested txn is fine),
/// then this level's puts against everything. One difference: a delete
/// with `range_end` `[0]` covers every key from its start (etcd 3.4 builds
/// the interval `[key, "\0")`, which covers nothing, and then panics at
/// apply if a put of the txn needs a key that delete removed).
fn check_intervals(ops: &[TxnOp]) -> Result<(Vec<Vec<u8>>, Vec<Interval>), RequestError> {
    let mut dels: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for op in ops {
        if let TxnOp::DeleteRange { key, range_end, .. } = op {
            dels.push((key.clone(), range_end.clone()));
        }
    }
    let deleted = |dels: &Vec<(Vec<u8>, Vec<u8>)>, k: &Vec<u8>| {
        dels.iter().any(|(key, end)| Model::in_range(key, end, k))
    };
    let mut puts: Vec<Vec<u8>> = Vec::new();
    let insert = |puts: &mut Vec<Vec<u8>>, k: &Vec<u8>| {
        if !puts.contains(k) {
            puts.push(k.clone());
        }
    };
    for op in ops {
        let TxnOp::Txn(t) = op else { continue };
        let (then_puts, then_dels) = check_intervals(&t.success)?;
        let (else_puts, else_dels) = check_intervals(&t.failure)?;
        for k in &then_puts {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(RequestError::DuplicateKey);
            }
            insert(&mut puts, k);
        }
        for k in &else_puts {
            if (puts.contains(k) && !then_puts.contains(k)) || deleted(&dels, k) {
                return Err(RequestError::DuplicateKey);
            }
            insert(&mut puts, k);
        }
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        let TxnOp::Put { key, .. } = op else { continue };
        if puts.contains(key) || deleted(&dels, key) {
            return Err(RequestError::DuplicateKey);
        }
        insert(&mut puts, key);
    }
    Ok((puts, dels))
}

/// etcd's `applierV3backend.Range` over the keys at the revision read:
/// the count is of every key in the range; then the revision filters,
/// the sort (NONE with a target other than KEY sorts ascending; stable,
/// so ties stay in key order), the limit and `more`, and `keys_only`.
pub fn answer(keys: &Keys, request: &RangeRequest, revision: i64) -> RangeResponse {
    let mut kvs: Vec<KeyValue> = keys
        .values()
        .filter(|kv| Model::in_range(&request.key, &request.range_end, &kv.key))
        .cloned()
        .collect();
    let count = kvs.len() as i64;
    if request.count_only {
        return RangeResponse {
            kvs: Vec::new(),
            count,
            more: false,
            revision,
        };
    }
    if request.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= request.max_mod_revision);
    }
    if request.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= request.min_mod_revision);
    }
    if request.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= request.max_create_revision);
    }
    if request.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= request.min_create_revision);
    }
    let mut order = request.sort_order;
    if request.sort_target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    let key_of = |kv: &KeyValue| -> (i64, Vec<u8>) {
        match request.sort_target {
            SortTarget::Key => (0, kv.key.clone()),
            SortTarget::Version => (kv.version, Vec::new()),
            SortTarget::Create => (kv.create_revision, Vec::new()),
            SortTarget::Mod => (kv.mod_revision, Vec::new()),
            SortTarget::Value => (0, kv.value.to_vec()),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by_key(key_of),
        SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(key_of(kv))),
    }
    let mut more = false;
    if request.limit > 0 && kvs.len() as i64 > request.limit {
        kvs.truncate(request.limit as usize);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    RangeResponse {
        kvs,
        count,
        more,
        revision,
    }
}
