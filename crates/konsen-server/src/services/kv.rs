//! etcd `KV`: Range, Put and DeleteRange. Txn and Compact are refused with
//! UNIMPLEMENTED until a later release.
//!
//! Reads are linearizable (ReadIndex through the node loop) unless the
//! request sets `serializable`, which reads this node's applied state (as
//! does every read when the unsafe setting `unsafe_stale_reads` is on).

use std::cmp::Ordering;

use konsen_rpc::convert::{
    RangeExtras, WriteOutcome, WriteResult, delete_request_to_command, key_value_to_etcd,
    put_request_to_command, range_request_from_etcd,
};
use konsen_rpc::etcd::etcdserverpb::range_request::{SortOrder, SortTarget};
use konsen_rpc::etcd::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse, kv_server::Kv,
};
use konsen_storage::KeyValue;
use tonic::{Request, Response, Status};

use super::Shared;

/// A Put's answer, from the outcome of its write.
pub(crate) fn put_response(shared: &Shared, outcome: WriteOutcome) -> Result<PutResponse, Status> {
    match outcome.result {
        WriteResult::Put(p) => Ok(PutResponse {
            header: Some(shared.header(p.revision, outcome.term)),
            prev_kv: p.prev_kv.map(key_value_to_etcd),
        }),
        WriteResult::Rejected(why) => Err(Status::invalid_argument(format!("etcdserver: {why}"))),
        WriteResult::DeleteRange(_) => {
            Err(Status::internal("a put was answered with a delete result"))
        }
    }
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
        let (read, extras) = range_request_from_etcd(&request)
            .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        // `unsafe_stale_reads` (the fault-injection suite's negative
        // control) turns every read into a serializable one.
        let linearizable = !request.serializable && !self.shared.settings.unsafe_stale_reads;
        let outcome = if linearizable {
            self.shared.read_linearizable(read).await?
        } else {
            self.shared.read_local(read).await?
        };
        let mut response = outcome.response;
        if !extras.is_trivial() {
            post_process(&mut response.kvs, &extras);
            response.count = response.kvs.len() as i64;
            let limit = usize::try_from(request.limit).unwrap_or(0);
            response.more = limit > 0 && response.kvs.len() > limit;
            if limit > 0 {
                response.kvs.truncate(limit);
            }
            if request.count_only {
                response.kvs.clear();
            }
        }
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
            WriteResult::Rejected(why) => {
                Err(Status::invalid_argument(format!("etcdserver: {why}")))
            }
            WriteResult::Put(_) => Err(Status::internal("a delete was answered with a put result")),
        }
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented(
            "konsen: transactions (KV.Txn) are not supported yet; they come in a later release",
        ))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented(
            "konsen: compaction (KV.Compact) is not supported yet: konsen keeps only the current \
             revision; it comes in a later release with transactions",
        ))
    }
}

/// Applies etcd's revision filters and sort order, which storage reads do
/// not do.
fn post_process(kvs: &mut Vec<KeyValue>, extras: &RangeExtras) {
    let within =
        |value: i64, min: i64, max: i64| (min == 0 || value >= min) && (max == 0 || value <= max);
    kvs.retain(|kv| {
        within(
            kv.mod_revision,
            extras.min_mod_revision,
            extras.max_mod_revision,
        ) && within(
            kv.create_revision,
            extras.min_create_revision,
            extras.max_create_revision,
        )
    });
    let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match extras.sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match extras.sort_order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
}
