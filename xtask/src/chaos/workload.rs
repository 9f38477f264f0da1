//! The clients and the history they record: concurrent clients putting
//! unique values and reading them back (linearizable Range, the default)
//! on a few keys, every operation recorded with its invocation and
//! completion time and what came of it, in the checker's terms
//! ([`crate::linearizability::Op`]).
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

use konsen_rpc::etcd::etcdserverpb::kv_client::KvClient;
use konsen_rpc::etcd::etcdserverpb::{PutRequest, RangeRequest};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::linearizability::{Op, OpKind, Outcome, Value};

/// Per-request deadline of the clients.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(1);
/// What a read that returned something other than a decimal u64 is
/// recorded as: a value no write ever wrote, so the checker rejects it.
pub const UNPARSEABLE: Value = u64::MAX;
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

/// One client's work until `stop`: random puts and gets on `keys`, with
/// endpoint rotation on any failure.
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
    while !stop.load(Ordering::Relaxed) {
        let key = keys[rng.random_range(0..keys.len())].clone();
        let mut kv = KvClient::new(channels[endpoint].clone());
        let outcome = if rng.random_bool(0.5) {
            seq += 1;
            // Unique across clients and runs of this client.
            let value = (client << 40) | seq;
            put(&mut kv, client, key, value, &recorder).await
        } else {
            get(&mut kv, client, key, &recorder).await
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

/// Reads `key` (linearizable) and records what it saw.
pub async fn get(
    kv: &mut KvClient<Channel>,
    client: u64,
    key: String,
    recorder: &Recorder,
) -> Outcome {
    let request = RangeRequest {
        key: key.clone().into_bytes(),
        ..RangeRequest::default()
    };
    let invoke = recorder.now();
    let result = tokio::time::timeout(REQUEST_DEADLINE, kv.range(request)).await;
    let complete = recorder.now();
    let (outcome, seen) = match result {
        Ok(Ok(response)) => {
            let seen = response.into_inner().kvs.first().map(|kv| {
                std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|s| s.parse::<Value>().ok())
                    .unwrap_or(UNPARSEABLE)
            });
            (Outcome::Ok, seen)
        }
        // A failed read changed nothing; the checker ignores it either way.
        Ok(Err(status)) => (write_error_outcome(&status), None),
        Err(_) => (Outcome::Unknown, None),
    };
    recorder.record(Op {
        client,
        key,
        kind: OpKind::Read(seen),
        invoke,
        complete,
        outcome,
    });
    outcome
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
