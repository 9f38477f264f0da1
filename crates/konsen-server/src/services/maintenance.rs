//! etcd `Maintenance`: Status (what `etcdctl endpoint status` and
//! `konsen-cli status` show), HashKV (`etcdctl endpoint hashkv`) and an
//! always-empty Alarm list. The rest is refused with UNIMPLEMENTED.

use std::pin::Pin;

use konsen_rpc::etcd::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
    maintenance_server::Maintenance,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::Shared;

/// The version reported to clients: the etcd API level konsen speaks
/// (clients parse the major and minor numbers), marked as konsen's.
pub const SERVER_VERSION: &str = "3.5.0-konsen";

#[derive(Clone, Debug)]
pub struct MaintenanceService {
    shared: Shared,
}

impl MaintenanceService {
    pub fn new(shared: Shared) -> Self {
        MaintenanceService { shared }
    }
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("konsen: {what} is not supported yet"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let status = self.shared.node.status();
        Ok(Response::new(AlarmResponse {
            header: Some(self.shared.header(status.revision, status.term)),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = self.shared.node.status();
        let mut errors = Vec::new();
        if s.leader.is_none() {
            errors.push("etcdserver: no leader".to_string());
        }
        let size = i64::try_from(s.data_size_bytes).unwrap_or(i64::MAX);
        Ok(Response::new(StatusResponse {
            header: Some(self.shared.header(s.revision, s.term)),
            version: SERVER_VERSION.to_string(),
            db_size: size,
            leader: s.leader.unwrap_or(0),
            raft_index: s.commit,
            raft_term: s.term,
            raft_applied_index: s.applied,
            errors,
            db_size_in_use: size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
            konsen_snapshot_index: s.snapshot_index,
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(unsupported("defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(unsupported("hash"))
    }

    /// A CRC-32 over every key and its record (revisions included) and
    /// the revision, from one consistent view: nodes at the same revision
    /// must answer the same hash (`etcdctl endpoint hashkv --cluster`).
    /// konsen keeps no history, so only the current revision can be hashed.
    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let _permit = self.shared.admit()?;
        let requested = request.into_inner().revision;
        let snapshots = self.shared.snapshots.clone();
        let (hash, header) = tokio::task::spawn_blocking(move || snapshots.hash())
            .await
            .map_err(|e| Status::internal(format!("hashing failed: {e}")))?
            .map_err(|e| Status::internal(format!("etcdserver: storage failure: {e}")))?;
        if requested > 0 && requested != header.revision {
            return Err(Status::unimplemented(format!(
                "konsen: only the current revision ({}) can be hashed, not {requested}",
                header.revision
            )));
        }
        let term = self.shared.node.status().term;
        Ok(Response::new(HashKvResponse {
            header: Some(self.shared.header(header.revision, term)),
            hash,
            compact_revision: 0,
            hash_revision: header.revision,
        }))
    }

    type SnapshotStream =
        Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unsupported("snapshot"))
    }

    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(unsupported("move_leader"))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unsupported("downgrade"))
    }
}
