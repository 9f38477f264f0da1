//! etcd `KV`: Range, Put, DeleteRange, Txn and Compact.
//!
//! Reads are linearizable (ReadIndex through the node loop) unless the
//! request sets `serializable`, which reads this node's applied state (as
//! does every read when the unsafe setting `unsafe_stale_reads` is on). A
//! txn that writes nothing is a read: served the same way, not through the
//! log, and serializable when every range in it is.

use konsen_rpc::convert::{
    WriteOutcome, WriteResult, delete_request_to_command, key_value_to_etcd,
    put_request_to_command, range_request_from_etcd, txn_request_from_etcd, txn_result_to_etcd,
};
use konsen_rpc::etcd::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, kv_server::Kv,
    request_op::Request as Op,
};
use konsen_storage::Command;
use tonic::{Request, Response, Status};

use super::{Shared, rejected_status};

/// The status for a write answered with another kind of result.
fn mismatched(what: &str) -> Status {
    Status::internal(format!("a {what} was answered with another kind of result"))
}

/// A Put's answer, from the outcome of its write.
pub(crate) fn put_response(shared: &Shared, outcome: WriteOutcome) -> Result<PutResponse, Status> {
    match outcome.result {
        WriteResult::Put(p) => Ok(PutResponse {
            header: Some(shared.header(p.revision, outcome.term)),
            prev_kv: p.prev_kv.map(key_value_to_etcd),
        }),
        WriteResult::Rejected(why) => Err(rejected_status(&why)),
        _ => Err(mismatched("put")),
    }
}

/// Whether every range of a txn, on every branch and at every depth, is
/// serializable (etcd's `isTxnSerializable`).
fn txn_is_serializable(ops: &[RequestOp]) -> bool {
    ops.iter().all(|op| match &op.request {
        Some(Op::RequestRange(r)) => r.serializable,
        Some(Op::RequestTxn(t)) => {
            txn_is_serializable(&t.success) && txn_is_serializable(&t.failure)
        }
        _ => true,
    })
}

#[derive(Clone, Debug)]
pub struct KvService {
    shared: Shared,
}

impl KvService {
    pub fn new(shared: Shared) -> Self {
        KvService { shared }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let _permit = self.shared.admit()?;
        let request = request.into_inner();
        if request.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        let read = range_request_from_etcd(&request)
            .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        // `unsafe_stale_reads` (the fault-injection suite's negative
        // control) turns every read into a serializable one.
        let linearizable = !request.serializable && !self.shared.settings.unsafe_stale_reads;
        let outcome = if linearizable {
            self.shared.read_linearizable(read).await?
        } else {
            self.shared.read_local(read).await?
        };
        let response = outcome.response;
        Ok(Response::new(RangeResponse {
            header: Some(self.shared.header(response.revision, outcome.term)),
            kvs: response.kvs.into_iter().map(key_value_to_etcd).collect(),
            more: response.more,
            count: response.count,
        }))
    }

    /// Served by `put.rs` on a connection; this one is for callers of the
    /// service itself.
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let _permit = self.shared.admit()?;
        let outcome = self
            .shared
            .write(put_request_to_command(request.into_inner()))
            .await?;
        put_response(&self.shared, outcome).map(Response::new)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let _permit = self.shared.admit()?;
        let outcome = self
            .shared
            .write(delete_request_to_command(request.into_inner()))
            .await?;
        match outcome.result {
            WriteResult::DeleteRange(d) => Ok(Response::new(DeleteRangeResponse {
                header: Some(self.shared.header(d.revision, outcome.term)),
                deleted: d.deleted,
                prev_kvs: d.prev_kvs.into_iter().map(key_value_to_etcd).collect(),
            })),
            WriteResult::Rejected(why) => Err(rejected_status(&why)),
            _ => Err(mismatched("delete")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let _permit = self.shared.admit()?;
        let request = request.into_inner();
        let serializable =
            txn_is_serializable(&request.success) && txn_is_serializable(&request.failure);
        let txn = txn_request_from_etcd(request)
            .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        let command = Command::Txn(txn);
        command
            .validate(&self.shared.storage_options)
            .map_err(|e| super::request_status(&e))?;
        let Command::Txn(txn) = command else {
            unreachable!("the command was built as a txn just above")
        };
        let (result, term) = if txn.is_read_only() {
            let linearizable = !serializable && !self.shared.settings.unsafe_stale_reads;
            self.shared.read_txn(txn, linearizable).await?
        } else {
            let outcome = self.shared.write(Command::Txn(txn)).await?;
            match outcome.result {
                WriteResult::Txn(t) => (t, outcome.term),
                WriteResult::Rejected(why) => return Err(rejected_status(&why)),
                _ => return Err(mismatched("txn")),
            }
        };
        let header = |revision| Some(self.shared.header(revision, term));
        Ok(Response::new(txn_result_to_etcd(result, &header)))
    }

    /// Goes through the log like a write: every node drops the same
    /// history at the same point. Reads below it are refused once the entry
    /// is applied; its records are deleted from the disk beside the node
    /// loop, and with `physical` the answer waits for that.
    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let _permit = self.shared.admit()?;
        let request = request.into_inner();
        let revision = request.revision;
        let outcome = self.shared.write(Command::Compact { revision }).await?;
        match outcome.result {
            WriteResult::Compact(c) => {
                if request.physical {
                    let reader = self.shared.reader.clone();
                    tokio::task::spawn_blocking(move || reader.wait_for_compaction())
                        .await
                        .map_err(|e| Status::internal(format!("physical compaction: {e}")))?;
                }
                Ok(Response::new(CompactionResponse {
                    header: Some(self.shared.header(c.revision, outcome.term)),
                }))
            }
            WriteResult::Rejected(why) => Err(rejected_status(&why)),
            _ => Err(mismatched("compaction")),
        }
    }
}
