//! etcd `Lease`: grant and revoke through the log; keep-alive and time to
//! live on the leader's clocks (`lessor.rs`), forwarded there from a
//! follower; the list of leases from this node's applied state.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use konsen_rpc::convert::WriteResult;
use konsen_rpc::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, lease_server::Lease,
};
use konsen_rpc::peer::LeaseRequest;
use konsen_storage::{Command, RequestError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{NOT_LEADER_MESSAGE, Shared, rejected_status, timed_out};

/// Keep-alive answers queued per stream before the stream stops reading
/// requests (the client is not reading its answers).
pub const LEASE_KEEPALIVE_RESPONSES_MAX: usize = 16;
/// Attempts at a fresh server-chosen id when one is taken already.
const GRANT_ID_ATTEMPTS_MAX: usize = 8;

/// The lease's clock as the leader reports it: granted TTL and seconds
/// left; `None`: no such lease (or it expired).
pub(crate) type LeaseClock = Option<(i64, i64)>;

#[derive(Debug)]
pub struct LeaseService {
    shared: Shared,
    /// The next server-chosen id, as etcd makes them: the member id's low
    /// 16 bits, then the start time in ms (40 bits) and a counter (8 bits),
    /// so ids from different nodes and runs do not meet.
    next_id: Arc<AtomicU64>,
}

impl LeaseService {
    pub fn new(shared: Shared) -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let start = ((shared.settings.node_id & 0xffff) << 48) | ((ms & 0xff_ffff_ffff) << 8);
        LeaseService {
            shared,
            next_id: Arc::new(AtomicU64::new(start)),
        }
    }

    fn new_id(&self) -> i64 {
        loop {
            let id = (self.next_id.fetch_add(1, Ordering::Relaxed) & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }

    fn header(&self) -> konsen_rpc::etcd::etcdserverpb::ResponseHeader {
        let status = self.shared.node.status();
        self.shared.header(status.revision, status.term)
    }
}

impl Shared {
    /// Asks the leader's lessor to renew lease `id` (`renew`) or only to
    /// report its clock; forwarded from a follower, tried again while no
    /// leader is known, within `limits.request_timeout_ms`.
    pub(crate) async fn lease_clock(&self, id: i64, renew: bool) -> Result<LeaseClock, Status> {
        let attempts = async {
            loop {
                if let Some(clock) = self.local_lease_clock(id, renew) {
                    return Ok(clock);
                }
                let leader = self.node.status().leader;
                if let Some(leader) = leader.filter(|&l| l != self.settings.node_id)
                    && let Some(client) = self.peers.get(&leader)
                {
                    let request = LeaseRequest {
                        cluster_id: self.settings.cluster_id,
                        from: self.settings.node_id,
                        id,
                        renew,
                    };
                    match client.clone().lease(request).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            return Ok(r.found.then_some((r.granted_ttl, r.remaining_ttl)));
                        }
                        Err(s) if s.message() == NOT_LEADER_MESSAGE => {}
                        Err(s) if s.code() == tonic::Code::Unavailable => {}
                        Err(s) => return Err(s),
                    }
                }
                tokio::time::sleep(self.settings.tick).await;
            }
        };
        tokio::time::timeout(self.settings.request_timeout(), attempts)
            .await
            .map_err(|_| timed_out())?
    }

    /// [`Shared::lease_clock`] here, if this node leads.
    pub(crate) fn local_lease_clock(&self, id: i64, renew: bool) -> Option<LeaseClock> {
        if renew {
            let ttl = self.lessor.renew(id).ok()?;
            Some(ttl.map(|ttl| (ttl, ttl)))
        } else {
            self.lessor.time_to_live(id).ok()
        }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let _permit = self.shared.admit()?;
        let r = request.into_inner();
        // etcd raises a short TTL to the cluster's minimum; a TTL the
        // command refuses (not positive, too large) stays refused.
        let ttl = if r.ttl > 0 {
            r.ttl.max(self.shared.settings.lease_ttl_min_secs())
        } else {
            r.ttl
        };
        let chosen = r.id != 0;
        for _ in 0..GRANT_ID_ATTEMPTS_MAX {
            let id = if chosen { r.id } else { self.new_id() };
            let outcome = self.shared.write(Command::LeaseGrant { id, ttl }).await?;
            match outcome.result {
                WriteResult::LeaseGrant(g) => {
                    return Ok(Response::new(LeaseGrantResponse {
                        header: Some(self.shared.header(g.revision, outcome.term)),
                        id: g.id,
                        ttl: g.ttl,
                        error: String::new(),
                    }));
                }
                WriteResult::Rejected(why)
                    if !chosen && why == RequestError::LeaseExists.to_string() => {}
                WriteResult::Rejected(why) => return Err(rejected_status(&why)),
                other => {
                    return Err(Status::internal(format!(
                        "unexpected outcome of a lease grant: {other:?}"
                    )));
                }
            }
        }
        Err(Status::internal(
            "etcdserver: could not find a free lease ID",
        ))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let _permit = self.shared.admit()?;
        let id = request.into_inner().id;
        let outcome = self.shared.write(Command::LeaseRevoke { id }).await?;
        match outcome.result {
            WriteResult::LeaseRevoke(r) => Ok(Response::new(LeaseRevokeResponse {
                header: Some(self.shared.header(r.revision, outcome.term)),
            })),
            WriteResult::Rejected(why) => Err(rejected_status(&why)),
            other => Err(Status::internal(format!(
                "unexpected outcome of a lease revoke: {other:?}"
            ))),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(LEASE_KEEPALIVE_RESPONSES_MAX);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    r = requests.next() => r,
                    () = tx.closed() => return,
                };
                let id = match request {
                    Some(Ok(r)) => r.id,
                    // The client closed its side, or the stream broke.
                    Some(Err(_)) | None => return,
                };
                let answer = match shared.lease_clock(id, true).await {
                    Ok(clock) => {
                        let status = shared.node.status();
                        Ok(LeaseKeepAliveResponse {
                            header: Some(shared.header(status.revision, status.term)),
                            id,
                            // etcd: a lease that is gone renews to 0.
                            ttl: clock.map_or(0, |(ttl, _)| ttl),
                        })
                    }
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let _permit = self.shared.admit()?;
        let r = request.into_inner();
        let clock = self.shared.lease_clock(r.id, false).await?;
        let stored = self.shared.reader.lease(r.id);
        let header = Some(self.header());
        let response = match clock {
            // A node that has not applied the grant yet knows no keys.
            Some((granted, remaining)) => LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: remaining,
                granted_ttl: granted,
                keys: stored
                    .filter(|_| r.keys)
                    .map(|(_, keys)| keys)
                    .unwrap_or_default(),
            },
            // etcd answers a lease that does not exist with a TTL of -1.
            None => LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let _permit = self.shared.admit()?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.header()),
            leases: self
                .shared
                .reader
                .leases()
                .into_iter()
                .map(|(id, _)| LeaseStatus { id })
                .collect(),
        }))
    }
}
