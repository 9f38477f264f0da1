//! The clients and the history they record: concurrent clients putting
//! unique values, reading them back (linearizable Range, the default) and
//! compare-and-swapping them (a Txn) on a few keys, every operation
//! recorded with its invocation and completion time and what came of it,
//! in the checker's terms ([`crate::linearizability::Op`]).
//!
//! A CAS is one Txn: compare the key's value with the decimal of the
//! expected value (for an absent key: create_revision == 0), on success
//! put a new unique value, on failure read the key, so that a failed
//! compare also tells what the value was. A client expects what it last
//! read or wrote for the key, so that many CASes succeed, and now and then
//! an older value, so that some fail.
//!
//! Some CASes compare mod_revision instead, with a (value, mod_revision)
//! pair the client read. The checker's register has no revisions; it is
//! given the CAS as one that expects the value. That is the same
//! condition: no key is ever deleted and every value is written once, so
//! a key's mod_revision is r exactly while it holds the value of the one
//! write applied at r, which the read reported with r. Were a server to
//! report a wrong revision or apply a write twice, the two would differ
//! and the history would show a swap from a value that was not current, or
//! a failed compare that read the expected value: a violation, never a
//! pass. The checker still checks every value the clients saw.
//!
//! Outcomes are classified conservatively: an error counts as a definite
//! failure only when the request certainly was not applied (refused as
//! invalid or over a limit before anything was proposed, or the TCP
//! connection was refused so nothing was sent). Everything else (deadline,
//! lost connection, "leader changed") is unknown: the write may have
//! happened.

use std::error::Error as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use konsen_rpc::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use konsen_rpc::etcd::etcdserverpb::kv_client::KvClient;
use konsen_rpc::etcd::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse, request_op, response_op,
};
use konsen_rpc::etcd::mvccpb::KeyValue;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::linearizability::{CasResult, Op, OpKind, Outcome, Value};

/// Per-request deadline of the clients.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(1);
/// What a read that returned something other than a decimal u64 is
/// recorded as: a value no write ever wrote, so the checker rejects it.
pub const UNPARSEABLE: Value = u64::MAX;
/// The share of operations that are compare-and-swaps; the others are
/// puts and reads, half and half.
pub const CAS_SHARE: f64 = 1.0 / 3.0;
/// The share of CASes that expect the value before the one the client last
/// knew, which is rarely still current: they exercise failed compares.
pub const CAS_STALE_SHARE: f64 = 0.2;
/// The share of CASes that compare mod_revision, when the client has read
/// a revision of the key.
pub const CAS_BY_REVISION_SHARE: f64 = 0.25;
/// The message a node gives a forwarded write it did not propose
/// (`konsen_server::services::NOT_LEADER_MESSAGE`).
const NOT_LEADER_MESSAGE: &str = "etcdserver: not leader (forwarded write not proposed)";

/// The history of one run, and the clock every time in it is read from.
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Instant,
    /// The wall-clock time of `start` (seconds since the Unix epoch), to
    /// match the history's times with node logs.
    pub start_unix_secs: f64,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        let start_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Recorder {
            start,
            start_unix_secs,
            ops: Arc::default(),
        }
    }

    /// Nanoseconds since the start of the run.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    /// Everything recorded so far.
    pub fn history(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }
}

/// The keys the clients use.
pub fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("chaos-{i}")).collect()
}

/// What one client last learned of one key, to aim its CASes with.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    /// The value it last read or wrote (`None`: absent, or nothing known).
    latest: Option<Value>,
    /// The one before that.
    older: Option<Value>,
    /// The last value it read with that value's mod_revision.
    revision: Option<(Value, i64)>,
}

impl Known {
    fn learn(&mut self, value: Option<Value>) {
        if value != self.latest {
            self.older = self.latest;
            self.latest = value;
        }
    }

    fn learn_read(&mut self, read: &Reading) {
        self.learn(read.value);
        if let (Some(value), Some(revision)) = (read.value, read.mod_revision) {
            self.revision = Some((value, revision));
        }
    }
}

/// What a CAS compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The value (`None`: the key does not exist, create_revision 0).
    Value(Option<Value>),
    /// The mod_revision of the value the client read with it.
    Revision { value: Value, mod_revision: i64 },
}

impl Expect {
    /// The value the checker is told the CAS expects.
    fn value(self) -> Option<Value> {
        match self {
            Expect::Value(v) => v,
            Expect::Revision { value, .. } => Some(value),
        }
    }
}

/// What the CAS on a key `known` this way expects.
fn choose_expect(known: &Known, rng: &mut SmallRng) -> Expect {
    if let Some((value, mod_revision)) = known.revision
        && rng.random_bool(CAS_BY_REVISION_SHARE)
    {
        return Expect::Revision {
            value,
            mod_revision,
        };
    }
    if rng.random_bool(CAS_STALE_SHARE) {
        Expect::Value(known.older)
    } else {
        Expect::Value(known.latest)
    }
}

/// One client's work until `stop`: random puts, gets and CASes on `keys`,
/// with endpoint rotation on any failure.
pub async fn client(
    client: u64,
    seed: u64,
    channels: Vec<Channel>,
    keys: Vec<String>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SmallRng::seed_from_u64(seed ^ (client.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    // Start on different nodes, so that every node serves reads.
    let mut endpoint = usize::try_from(client).unwrap_or(0) % channels.len();
    let mut seq: u64 = 0;
    let mut known = vec![Known::default(); keys.len()];
    while !stop.load(Ordering::Relaxed) {
        let k = rng.random_range(0..keys.len());
        let key = keys[k].clone();
        let mut kv = KvClient::new(channels[endpoint].clone());
        let roll: f64 = rng.random();
        let outcome = if roll < CAS_SHARE + (1.0 - CAS_SHARE) / 2.0 {
            seq += 1;
            // Unique across clients and runs of this client.
            let value = (client << 40) | seq;
            if roll < CAS_SHARE {
                let expect = choose_expect(&known[k], &mut rng);
                let (outcome, read) = cas(&mut kv, client, key, expect, value, &recorder).await;
                match (outcome, read) {
                    (Outcome::Ok, None) => known[k].learn(Some(value)),
                    (Outcome::Ok, Some(read)) => known[k].learn_read(&read),
                    _ => {}
                }
                outcome
            } else {
                let outcome = put(&mut kv, client, key, value, &recorder).await;
                // An unknown put most likely happened: expecting its value
                // is a CAS that tells whether it did.
                if outcome != Outcome::Failed {
                    known[k].learn(Some(value));
                }
                outcome
            }
        } else {
            let (outcome, read) = read(&mut kv, client, key, &recorder).await;
            if outcome == Outcome::Ok {
                known[k].learn_read(&read);
            }
            outcome
        };
        if outcome != Outcome::Ok {
            endpoint = (endpoint + 1) % channels.len();
            // A node that refuses at once should not turn into a busy loop.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Puts `value` at `key` and records it.
pub async fn put(
    kv: &mut KvClient<Channel>,
    client: u64,
    key: String,
    value: Value,
    recorder: &Recorder,
) -> Outcome {
    let request = PutRequest {
        key: key.clone().into_bytes(),
        value: value.to_string().into_bytes().into(),
        ..PutRequest::default()
    };
    let invoke = recorder.now();
    let result = tokio::time::timeout(REQUEST_DEADLINE, kv.put(request)).await;
    let complete = recorder.now();
    let outcome = match result {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(status)) => write_error_outcome(&status),
        Err(_) => Outcome::Unknown,
    };
    recorder.record(Op {
        client,
        key,
        kind: OpKind::Write(value),
        invoke,
        complete,
        outcome,
    });
    outcome
}

/// What a read of one key returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// `None`: the key did not exist.
    pub value: Option<Value>,
    pub mod_revision: Option<i64>,
}

impl Reading {
    /// The first of `kvs` (a Range of one key).
    fn of(kvs: &[KeyValue]) -> Reading {
        let first = kvs.first();
        Reading {
            value: first.map(|kv| parse_value(&kv.value)),
            mod_revision: first.map(|kv| kv.mod_revision),
        }
    }
}

/// A value as the clients write it: the decimal of a u64.
fn parse_value(bytes: &[u8]) -> Value {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<Value>().ok())
        .unwrap_or(UNPARSEABLE)
}

/// Reads `key` (linearizable) and records what it saw.
pub async fn get(
    kv: &mut KvClient<Channel>,
    client: u64,
    key: String,
    recorder: &Recorder,
) -> Outcome {
    read(kv, client, key, recorder).await.0
}

/// [`get`], also returning what it read (meaningful when `Ok`).
async fn read(
    kv: &mut KvClient<Channel>,
    client: u64,
    key: String,
    recorder: &Recorder,
) -> (Outcome, Reading) {
    let request = RangeRequest {
        key: key.clone().into_bytes(),
        ..RangeRequest::default()
    };
    let invoke = recorder.now();
    let result = tokio::time::timeout(REQUEST_DEADLINE, kv.range(request)).await;
    let complete = recorder.now();
    let (outcome, seen) = match result {
        Ok(Ok(response)) => (Outcome::Ok, Reading::of(&response.into_inner().kvs)),
        // A failed read changed nothing; the checker ignores it either way.
        Ok(Err(status)) => (write_error_outcome(&status), Reading::default()),
        Err(_) => (Outcome::Unknown, Reading::default()),
    };
    recorder.record(Op {
        client,
        key,
        kind: OpKind::Read(seen.value),
        invoke,
        complete,
        outcome,
    });
    (outcome, seen)
}

/// The Txn of a CAS on `key`: if `expect` holds, put `new`, else read.
pub fn cas_request(key: &str, expect: Expect, new: Value) -> TxnRequest {
    let (target, operand) = match expect {
        Expect::Value(None) => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
        Expect::Value(Some(v)) => (
            CompareTarget::Value,
            TargetUnion::Value(v.to_string().into_bytes()),
        ),
        Expect::Revision { mod_revision, .. } => {
            (CompareTarget::Mod, TargetUnion::ModRevision(mod_revision))
        }
    };
    let compare = Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(operand),
        ..Compare::default()
    };
    let put = PutRequest {
        key: key.as_bytes().to_vec(),
        value: new.to_string().into_bytes().into(),
        ..PutRequest::default()
    };
    let range = RangeRequest {
        key: key.as_bytes().to_vec(),
        ..RangeRequest::default()
    };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put)),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(range)),
        }],
    }
}

/// What a CAS's answer says: whether it swapped, and for a failed compare
/// what the failure branch read (`None` when the answer has no read).
pub fn cas_result(response: &TxnResponse) -> (CasResult, Option<Reading>) {
    if response.succeeded {
        return (CasResult::Swapped, None);
    }
    match response.responses.first().and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(range)) => {
            let read = Reading::of(&range.kvs);
            (CasResult::NotSwapped(read.value), Some(read))
        }
        _ => (CasResult::NotSwappedUnread, None),
    }
}

/// Compare-and-swaps `key` from `expect` to `new` and records it; returns
/// what the failure branch read, if it ran.
pub async fn cas(
    kv: &mut KvClient<Channel>,
    client: u64,
    key: String,
    expect: Expect,
    new: Value,
    recorder: &Recorder,
) -> (Outcome, Option<Reading>) {
    let request = cas_request(&key, expect, new);
    let invoke = recorder.now();
    let result = tokio::time::timeout(REQUEST_DEADLINE, kv.txn(request)).await;
    let complete = recorder.now();
    // A Txn with a put is a write: unknown unless certainly not applied.
    let (outcome, (result, read)) = match result {
        Ok(Ok(response)) => (Outcome::Ok, cas_result(response.get_ref())),
        Ok(Err(status)) => (
            write_error_outcome(&status),
            (CasResult::NotSwappedUnread, None),
        ),
        Err(_) => (Outcome::Unknown, (CasResult::NotSwappedUnread, None)),
    };
    recorder.record(Op {
        client,
        key,
        kind: OpKind::Cas {
            expected: expect.value(),
            new,
            result,
        },
        invoke,
        complete,
        outcome,
    });
    (outcome, read)
}

/// Whether a write that failed with `status` certainly did not happen.
pub fn write_error_outcome(status: &Status) -> Outcome {
    match status.code() {
        // Refused by validation or admission, before any proposal.
        Code::InvalidArgument | Code::ResourceExhausted => Outcome::Failed,
        Code::Unavailable if status.message() == NOT_LEADER_MESSAGE => Outcome::Failed,
        Code::Unavailable if connection_refused(status) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// Whether the client could not even connect (nothing was sent).
fn connection_refused(status: &Status) -> bool {
    let mut text = status.message().to_string();
    let mut source = status.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text.contains("Connection refused")
}

#[cfg(test)]
mod tests {
    use konsen_rpc::etcd::etcdserverpb::{RangeResponse, ResponseOp};

    use super::*;

    fn compare_of(request: &TxnRequest) -> (CompareTarget, CompareResult, TargetUnion) {
        let [compare] = request.compare.as_slice() else {
            panic!("one compare: {request:?}");
        };
        assert_eq!(compare.key, b"k");
        assert!(compare.range_end.is_empty());
        (
            compare.target(),
            compare.result(),
            compare.target_union.clone().expect("an operand"),
        )
    }

    #[test]
    fn a_cas_puts_on_success_and_reads_on_failure() {
        let request = cas_request("k", Expect::Value(Some(17)), 42);
        assert_eq!(
            compare_of(&request),
            (
                CompareTarget::Value,
                CompareResult::Equal,
                TargetUnion::Value(b"17".to_vec())
            )
        );
        let [
            RequestOp {
                request: Some(request_op::Request::RequestPut(put)),
            },
        ] = request.success.as_slice()
        else {
            panic!("one put on success: {request:?}");
        };
        assert_eq!(
            (put.key.as_slice(), &put.value[..]),
            (&b"k"[..], &b"42"[..])
        );
        let [
            RequestOp {
                request: Some(request_op::Request::RequestRange(range)),
            },
        ] = request.failure.as_slice()
        else {
            panic!("one range on failure: {request:?}");
        };
        assert_eq!(range.key, b"k");
        assert!(range.range_end.is_empty() && !range.serializable);
    }

    #[test]
    fn a_cas_on_an_absent_key_compares_create_revision_and_by_revision_mod_revision() {
        assert_eq!(
            compare_of(&cas_request("k", Expect::Value(None), 1)),
            (
                CompareTarget::Create,
                CompareResult::Equal,
                TargetUnion::CreateRevision(0)
            )
        );
        let expect = Expect::Revision {
            value: 3,
            mod_revision: 9,
        };
        assert_eq!(
            compare_of(&cas_request("k", expect, 1)),
            (
                CompareTarget::Mod,
                CompareResult::Equal,
                TargetUnion::ModRevision(9)
            )
        );
        // The checker is told the value the revision stands for.
        assert_eq!(expect.value(), Some(3));
    }

    fn failed_with(kvs: Vec<KeyValue>) -> TxnResponse {
        TxnResponse {
            succeeded: false,
            responses: vec![ResponseOp {
                response: Some(response_op::Response::ResponseRange(RangeResponse {
                    kvs,
                    ..RangeResponse::default()
                })),
            }],
            ..TxnResponse::default()
        }
    }

    #[test]
    fn a_cas_answer_says_whether_it_swapped_and_what_it_saw() {
        let swapped = TxnResponse {
            succeeded: true,
            ..TxnResponse::default()
        };
        assert_eq!(cas_result(&swapped), (CasResult::Swapped, None));
        let kv = |value: &[u8]| KeyValue {
            key: b"k".to_vec(),
            value: value.to_vec().into(),
            mod_revision: 7,
            ..KeyValue::default()
        };
        let seen = Reading {
            value: Some(5),
            mod_revision: Some(7),
        };
        assert_eq!(
            cas_result(&failed_with(vec![kv(b"5")])),
            (CasResult::NotSwapped(Some(5)), Some(seen))
        );
        assert_eq!(
            cas_result(&failed_with(vec![kv(b"junk")])).0,
            CasResult::NotSwapped(Some(UNPARSEABLE))
        );
        assert_eq!(
            cas_result(&failed_with(Vec::new())),
            (CasResult::NotSwapped(None), Some(Reading::default()))
        );
        // A failure branch that read nothing says only that it failed.
        assert_eq!(
            cas_result(&TxnResponse::default()),
            (CasResult::NotSwappedUnread, None)
        );
    }

    #[test]
    fn cases_mostly_expect_what_the_client_last_knew() {
        let mut known = Known::default();
        known.learn(Some(1));
        known.learn(Some(1));
        known.learn_read(&Reading {
            value: Some(2),
            mod_revision: Some(5),
        });
        assert_eq!(
            (known.latest, known.older, known.revision),
            (Some(2), Some(1), Some((2, 5)))
        );
        let mut rng = SmallRng::seed_from_u64(3);
        let mut counts = [0usize; 3];
        let draws = 10_000;
        for _ in 0..draws {
            let i = match choose_expect(&known, &mut rng) {
                Expect::Value(Some(2)) => 0,
                Expect::Value(Some(1)) => 1,
                Expect::Revision {
                    value: 2,
                    mod_revision: 5,
                } => 2,
                other => panic!("{other:?}"),
            };
            counts[i] += 1;
        }
        let share = |n: usize| n as f64 / draws as f64;
        let by_revision = CAS_BY_REVISION_SHARE;
        let stale = (1.0 - by_revision) * CAS_STALE_SHARE;
        assert!((share(counts[2]) - by_revision).abs() < 0.03, "{counts:?}");
        assert!((share(counts[1]) - stale).abs() < 0.03, "{counts:?}");
        // Nothing known: the key is expected absent.
        assert_eq!(
            choose_expect(&Known::default(), &mut rng),
            Expect::Value(None)
        );
    }
}
