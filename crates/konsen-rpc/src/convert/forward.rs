//! Forwarded writes: the result of applying a command, as the leader sends
//! it back to the follower that forwarded it.

use konsen_core::{Index, Term};
use konsen_storage::{
    ApplyOutcome, CompactResult, DeleteRangeResult, KeyValue, LeaseGrantResult, LeaseRevokeResult,
    PutResult, TxnResult,
};
use prost::Message as _;

use crate::ConvertError;
use crate::convert::{txn_result_from_etcd, txn_result_to_etcd};
use crate::etcd::etcdserverpb as pb;
use crate::peer::{self, forward_response::Outcome};

/// What became of a client's write, wherever it was proposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The log position the write was applied at.
    pub index: Index,
    pub term: Term,
    pub result: WriteResult,
}

/// The state machine's answer to a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    Put(PutResult),
    DeleteRange(DeleteRangeResult),
    Txn(TxnResult),
    Compact(CompactResult),
    LeaseGrant(LeaseGrantResult),
    LeaseRevoke(LeaseRevokeResult),
    /// Refused alike on every replica; the text is for the client.
    Rejected(String),
}

impl WriteResult {
    /// The storage outcome of a client's command. An empty outcome cannot
    /// come from a client command, but is reported rather than trusted.
    pub fn from_apply(outcome: ApplyOutcome) -> WriteResult {
        match outcome {
            ApplyOutcome::Put(p) => WriteResult::Put(p),
            ApplyOutcome::DeleteRange(d) => WriteResult::DeleteRange(d),
            ApplyOutcome::Txn(t) => WriteResult::Txn(t),
            ApplyOutcome::Compact(c) => WriteResult::Compact(c),
            ApplyOutcome::LeaseGrant(g) => WriteResult::LeaseGrant(g),
            ApplyOutcome::LeaseRevoke(r) => WriteResult::LeaseRevoke(r),
            ApplyOutcome::Rejected(e) => WriteResult::Rejected(e.to_string()),
            ApplyOutcome::Empty => {
                WriteResult::Rejected("the entry carried no command".to_string())
            }
        }
    }
}

/// The outcome as the leader's `Forward` answer.
pub fn write_outcome_to_wire(o: WriteOutcome) -> peer::ForwardResponse {
    let outcome = match o.result {
        WriteResult::Put(p) => Outcome::Put(peer::PutResult {
            revision: p.revision,
            prev_kv: p.prev_kv.map(kv_to_wire),
        }),
        WriteResult::DeleteRange(d) => Outcome::DeleteRange(peer::DeleteRangeResult {
            revision: d.revision,
            deleted: d.deleted,
            prev_kvs: d.prev_kvs.into_iter().map(kv_to_wire).collect(),
        }),
        WriteResult::Txn(t) => {
            // The revisions travel in the headers; the rest of each header
            // is the answering node's to fill in.
            let header = |revision| {
                Some(pb::ResponseHeader {
                    revision,
                    ..Default::default()
                })
            };
            Outcome::Txn(txn_result_to_etcd(t, &header).encode_to_vec().into())
        }
        WriteResult::Compact(c) => Outcome::CompactRevision(c.revision),
        WriteResult::LeaseGrant(g) => Outcome::LeaseGrant(peer::LeaseGrantResult {
            id: g.id,
            ttl: g.ttl,
            revision: g.revision,
        }),
        WriteResult::LeaseRevoke(r) => Outcome::LeaseRevoke(peer::LeaseRevokeResult {
            id: r.id,
            revision: r.revision,
            deleted: r.deleted,
        }),
        WriteResult::Rejected(message) => Outcome::Rejected(peer::Rejected { message }),
    };
    peer::ForwardResponse {
        index: o.index,
        term: o.term,
        outcome: Some(outcome),
    }
}

/// The leader's `Forward` answer as an outcome. Fails on a missing outcome.
pub fn write_outcome_from_wire(r: peer::ForwardResponse) -> Result<WriteOutcome, ConvertError> {
    let result = match r.outcome.ok_or(ConvertError::Missing {
        message: "ForwardResponse",
        field: "outcome",
    })? {
        Outcome::Put(p) => WriteResult::Put(PutResult {
            revision: p.revision,
            prev_kv: p.prev_kv.map(kv_from_wire),
        }),
        Outcome::DeleteRange(d) => WriteResult::DeleteRange(DeleteRangeResult {
            revision: d.revision,
            deleted: d.deleted,
            prev_kvs: d.prev_kvs.into_iter().map(kv_from_wire).collect(),
        }),
        Outcome::Txn(bytes) => {
            let t = pb::TxnResponse::decode(bytes).map_err(|e| ConvertError::Invalid {
                message: "ForwardResponse",
                reason: format!("txn outcome: {e}"),
            })?;
            WriteResult::Txn(txn_result_from_etcd(t)?)
        }
        Outcome::CompactRevision(revision) => WriteResult::Compact(CompactResult { revision }),
        Outcome::LeaseGrant(g) => WriteResult::LeaseGrant(LeaseGrantResult {
            id: g.id,
            ttl: g.ttl,
            revision: g.revision,
        }),
        Outcome::LeaseRevoke(r) => WriteResult::LeaseRevoke(LeaseRevokeResult {
            id: r.id,
            revision: r.revision,
            deleted: r.deleted,
        }),
        Outcome::Rejected(r) => WriteResult::Rejected(r.message),
    };
    Ok(WriteOutcome {
        index: r.index,
        term: r.term,
        result,
    })
}

fn kv_to_wire(kv: KeyValue) -> peer::KeyValue {
    peer::KeyValue {
        key: kv.key.into(),
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn kv_from_wire(kv: peer::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key.to_vec(),
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn outcomes_round_trip() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: Bytes::from_static(b"v"),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 0,
        };
        for result in [
            WriteResult::Put(PutResult {
                revision: 3,
                prev_kv: Some(kv.clone()),
            }),
            WriteResult::DeleteRange(DeleteRangeResult {
                revision: 4,
                deleted: 1,
                prev_kvs: vec![kv.clone()],
            }),
            WriteResult::Txn(TxnResult {
                revision: 5,
                succeeded: true,
                responses: vec![konsen_storage::TxnResponse::Put(PutResult {
                    revision: 5,
                    prev_kv: Some(kv.clone()),
                })],
            }),
            WriteResult::Compact(CompactResult { revision: 5 }),
            WriteResult::LeaseGrant(LeaseGrantResult {
                id: 7,
                ttl: 10,
                revision: 5,
            }),
            WriteResult::LeaseRevoke(LeaseRevokeResult {
                id: 7,
                revision: 6,
                deleted: 2,
            }),
            WriteResult::Rejected("key not found".into()),
        ] {
            let o = WriteOutcome {
                index: 9,
                term: 2,
                result,
            };
            assert_eq!(
                write_outcome_from_wire(write_outcome_to_wire(o.clone())),
                Ok(o)
            );
        }
    }

    #[test]
    fn missing_outcome_is_an_error() {
        let r = peer::ForwardResponse {
            index: 1,
            term: 1,
            outcome: None,
        };
        assert!(write_outcome_from_wire(r).is_err());
    }
}
