//! etcd KV requests <-> konsen-storage commands and reads.
//!
//! Requests become [`Command`]s (writes), [`RangeRequest`]s (reads) or
//! [`Txn`]s; validation of their contents (empty key, size, duplicate keys)
//! is [`Command::validate`]'s job, not this module's.

use bytes::Bytes;
use konsen_storage::{
    self as storage, Command, Compare, CompareResult, CompareTarget, DeleteRangeResult, KeyValue,
    PutResult, RangeRequest, RangeResponse, Txn, TxnOp, TxnResponse, TxnResult,
};

use crate::ConvertError;
use crate::etcd::etcdserverpb::{self as pb, range_request::SortOrder, range_request::SortTarget};
use crate::etcd::mvccpb;

/// An etcd range request as a storage read. Fails on an unknown sort order
/// or target.
pub fn range_request_from_etcd(r: &pb::RangeRequest) -> Result<RangeRequest, ConvertError> {
    let sort_order = match SortOrder::try_from(r.sort_order) {
        Ok(SortOrder::None) => storage::SortOrder::None,
        Ok(SortOrder::Ascend) => storage::SortOrder::Ascend,
        Ok(SortOrder::Descend) => storage::SortOrder::Descend,
        Err(_) => {
            return Err(ConvertError::UnknownEnum {
                message: "RangeRequest",
                field: "sort_order",
                value: r.sort_order,
            });
        }
    };
    let sort_target = match SortTarget::try_from(r.sort_target) {
        Ok(SortTarget::Key) => storage::SortTarget::Key,
        Ok(SortTarget::Version) => storage::SortTarget::Version,
        Ok(SortTarget::Create) => storage::SortTarget::Create,
        Ok(SortTarget::Mod) => storage::SortTarget::Mod,
        Ok(SortTarget::Value) => storage::SortTarget::Value,
        Err(_) => {
            return Err(ConvertError::UnknownEnum {
                message: "RangeRequest",
                field: "sort_target",
                value: r.sort_target,
            });
        }
    };
    Ok(RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        keys_only: r.keys_only,
        count_only: r.count_only,
        sort_order,
        sort_target,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

/// An etcd txn as a storage txn. Fails on an unknown compare result or
/// target, or an operation that holds no request.
pub fn txn_request_from_etcd(r: pb::TxnRequest) -> Result<Txn, ConvertError> {
    let compare = r
        .compare
        .into_iter()
        .map(compare_from_etcd)
        .collect::<Result<_, _>>()?;
    let ops = |ops: Vec<pb::RequestOp>| -> Result<Vec<TxnOp>, ConvertError> {
        ops.into_iter().map(op_from_etcd).collect()
    };
    Ok(Txn {
        compare,
        success: ops(r.success)?,
        failure: ops(r.failure)?,
    })
}

fn compare_from_etcd(c: pb::Compare) -> Result<Compare, ConvertError> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => {
            return Err(ConvertError::UnknownEnum {
                message: "Compare",
                field: "result",
                value: c.result,
            });
        }
    };
    // As etcd: an operand of another kind than the target counts as zero
    // (or the empty value).
    let int = |want: fn(&U) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let target = match T::try_from(c.target) {
        Ok(T::Version) => CompareTarget::Version(int(|u| match u {
            U::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(T::Create) => CompareTarget::Create(int(|u| match u {
            U::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(T::Mod) => CompareTarget::Mod(int(|u| match u {
            U::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(T::Lease) => CompareTarget::Lease(int(|u| match u {
            U::Lease(v) => Some(*v),
            _ => None,
        })),
        Ok(T::Value) => CompareTarget::Value(match &c.target_union {
            Some(U::Value(v)) => Bytes::copy_from_slice(v),
            _ => Bytes::new(),
        }),
        Err(_) => {
            return Err(ConvertError::UnknownEnum {
                message: "Compare",
                field: "target",
                value: c.target,
            });
        }
    };
    Ok(Compare {
        key: c.key,
        range_end: c.range_end,
        result,
        target,
    })
}

fn op_from_etcd(op: pb::RequestOp) -> Result<TxnOp, ConvertError> {
    use pb::request_op::Request;
    Ok(
        match op.request.ok_or(ConvertError::Missing {
            message: "RequestOp",
            field: "request",
        })? {
            Request::RequestRange(r) => TxnOp::Range(range_request_from_etcd(&r)?),
            Request::RequestPut(r) => TxnOp::Put {
                key: r.key,
                value: r.value,
                lease: r.lease,
                prev_kv: r.prev_kv,
                ignore_value: r.ignore_value,
                ignore_lease: r.ignore_lease,
            },
            Request::RequestDeleteRange(r) => TxnOp::DeleteRange {
                key: r.key,
                range_end: r.range_end,
                prev_kv: r.prev_kv,
            },
            Request::RequestTxn(t) => TxnOp::Txn(txn_request_from_etcd(t)?),
        },
    )
}

/// A txn's result as etcd's answer; `header` makes the header of each
/// response from the revision it saw.
pub fn txn_result_to_etcd(
    t: TxnResult,
    header: &impl Fn(i64) -> Option<pb::ResponseHeader>,
) -> pb::TxnResponse {
    use pb::response_op::Response;
    let responses = t
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                TxnResponse::Range(r) => Response::ResponseRange(pb::RangeResponse {
                    header: header(r.revision),
                    kvs: r.kvs.into_iter().map(key_value_to_etcd).collect(),
                    more: r.more,
                    count: r.count,
                }),
                TxnResponse::Put(p) => Response::ResponsePut(pb::PutResponse {
                    header: header(p.revision),
                    prev_kv: p.prev_kv.map(key_value_to_etcd),
                }),
                TxnResponse::DeleteRange(d) => {
                    Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: header(d.revision),
                        deleted: d.deleted,
                        prev_kvs: d.prev_kvs.into_iter().map(key_value_to_etcd).collect(),
                    })
                }
                TxnResponse::Txn(t) => Response::ResponseTxn(txn_result_to_etcd(t, header)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: header(t.revision),
        succeeded: t.succeeded,
        responses,
    }
}

/// etcd's txn answer as a txn result (a forwarded txn's answer, whose
/// headers carry the revisions). Fails on a response that holds nothing.
pub fn txn_result_from_etcd(t: pb::TxnResponse) -> Result<TxnResult, ConvertError> {
    use pb::response_op::Response;
    let revision = |h: &Option<pb::ResponseHeader>| h.as_ref().map_or(0, |h| h.revision);
    let mut responses = Vec::with_capacity(t.responses.len());
    for r in t.responses {
        responses.push(
            match r.response.ok_or(ConvertError::Missing {
                message: "ResponseOp",
                field: "response",
            })? {
                Response::ResponseRange(r) => TxnResponse::Range(RangeResponse {
                    revision: revision(&r.header),
                    kvs: r.kvs.into_iter().map(key_value_from_etcd).collect(),
                    count: r.count,
                    more: r.more,
                }),
                Response::ResponsePut(p) => TxnResponse::Put(PutResult {
                    revision: revision(&p.header),
                    prev_kv: p.prev_kv.map(key_value_from_etcd),
                }),
                Response::ResponseDeleteRange(d) => TxnResponse::DeleteRange(DeleteRangeResult {
                    revision: revision(&d.header),
                    deleted: d.deleted,
                    prev_kvs: d.prev_kvs.into_iter().map(key_value_from_etcd).collect(),
                }),
                Response::ResponseTxn(t) => TxnResponse::Txn(txn_result_from_etcd(t)?),
            },
        );
    }
    Ok(TxnResult {
        revision: revision(&t.header),
        succeeded: t.succeeded,
        responses,
    })
}

/// etcd's `mvccpb.KeyValue` as a stored key-value.
pub fn key_value_from_etcd(kv: mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

/// An etcd put as a storage command.
pub fn put_request_to_command(r: pb::PutRequest) -> Command {
    Command::Put {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

/// An etcd delete as a storage command.
pub fn delete_request_to_command(r: pb::DeleteRangeRequest) -> Command {
    Command::DeleteRange {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

/// A stored key-value as etcd's `mvccpb.KeyValue`.
pub fn key_value_to_etcd(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sort_order_is_an_error() {
        let r = pb::RangeRequest {
            key: b"a".to_vec(),
            sort_order: 7,
            ..Default::default()
        };
        assert!(matches!(
            range_request_from_etcd(&r),
            Err(ConvertError::UnknownEnum {
                field: "sort_order",
                ..
            })
        ));
    }

    #[test]
    fn compares_take_their_operand_from_the_union() {
        use pb::compare::TargetUnion;
        let txn = pb::TxnRequest {
            compare: vec![
                pb::Compare {
                    result: 3,
                    target: 2,
                    key: b"k".to_vec(),
                    target_union: Some(TargetUnion::ModRevision(7)),
                    range_end: Vec::new(),
                },
                // An operand of another kind counts as zero.
                pb::Compare {
                    result: 0,
                    target: 0,
                    key: b"k".to_vec(),
                    target_union: Some(TargetUnion::Lease(9)),
                    range_end: b"l".to_vec(),
                },
            ],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: b"k".to_vec(),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        let t = txn_request_from_etcd(txn).unwrap();
        assert_eq!(t.compare[0].result, CompareResult::NotEqual);
        assert_eq!(t.compare[0].target, CompareTarget::Mod(7));
        assert_eq!(t.compare[1].target, CompareTarget::Version(0));
        assert_eq!(t.compare[1].range_end, b"l");
        assert!(matches!(t.success[0], TxnOp::Put { .. }));
        let empty_op = pb::TxnRequest {
            success: vec![pb::RequestOp { request: None }],
            ..Default::default()
        };
        assert!(txn_request_from_etcd(empty_op).is_err());
    }

    #[test]
    fn txn_results_round_trip_through_etcd_types() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: Bytes::from_static(b"v"),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 0,
        };
        let result = TxnResult {
            revision: 4,
            succeeded: true,
            responses: vec![
                TxnResponse::Put(PutResult {
                    revision: 4,
                    prev_kv: Some(kv.clone()),
                }),
                TxnResponse::Range(RangeResponse {
                    kvs: vec![kv.clone()],
                    count: 1,
                    more: false,
                    revision: 4,
                }),
                TxnResponse::Txn(TxnResult {
                    revision: 4,
                    succeeded: false,
                    responses: vec![TxnResponse::DeleteRange(DeleteRangeResult {
                        revision: 4,
                        deleted: 1,
                        prev_kvs: vec![kv],
                    })],
                }),
            ],
        };
        let header = |revision| {
            Some(pb::ResponseHeader {
                revision,
                ..Default::default()
            })
        };
        let wire = txn_result_to_etcd(result.clone(), &header);
        assert_eq!(txn_result_from_etcd(wire), Ok(result));
    }
}
