//! etcd `Cluster`: MemberList from the endpoint list. Membership changes
//! are refused with UNIMPLEMENTED.

use konsen_rpc::etcd::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, cluster_server::Cluster,
};
use tonic::{Request, Response, Status};

use super::Shared;

#[derive(Clone, Debug)]
pub struct ClusterService {
    shared: Shared,
}

impl ClusterService {
    pub fn new(shared: Shared) -> Self {
        ClusterService { shared }
    }
}

fn membership_changes_unsupported() -> Status {
    Status::unimplemented("konsen: membership changes are not supported yet; edit conf/cluster.yml")
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(membership_changes_unsupported())
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(membership_changes_unsupported())
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(membership_changes_unsupported())
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let status = self.shared.node.status();
        let members = self
            .shared
            .settings
            .endpoints
            .iter()
            .map(|(id, endpoint)| Member {
                id: *id,
                name: format!("node-{id}"),
                peer_ur_ls: vec![format!("http://{endpoint}")],
                client_ur_ls: vec![format!("http://{endpoint}")],
                is_learner: false,
            })
            .collect();
        Ok(Response::new(MemberListResponse {
            header: Some(self.shared.header(status.revision, status.term)),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(membership_changes_unsupported())
    }
}
