//! [`Cluster`]: a konsen (or etcd) cluster as the CLI sees it, through the
//! etcd v3 API only. It finds the leader itself (Maintenance.Status on
//! each endpoint, following the leader's client URL from MemberList when
//! the leader is not among the given endpoints), sends writes and
//! linearizable reads there, and retries across leader changes until the
//! deadline.

use std::time::{Duration, Instant};

use konsen_rpc::etcd::etcdserverpb::{
    MemberListRequest, StatusRequest, StatusResponse, cluster_client::ClusterClient,
    kv_client::KvClient, maintenance_client::MaintenanceClient,
};
use konsen_rpc::net::{ChannelTimeouts, TcpConnector, lazy_channel};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Per-call timeout while probing endpoints.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between attempts while the cluster has no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Why a command failed; each kind has its own exit code.
#[derive(Debug)]
pub enum CliError {
    /// Every endpoint answered, none knows a leader.
    NoLeader,
    /// No endpoint answered at all.
    Unreachable(Vec<String>),
    /// The deadline passed while retrying; the last error says why.
    Deadline(String),
    /// The cluster refused the request (bad key, too large, ...).
    Refused(Status),
    /// The command line or its input does not parse.
    Usage(String),
    /// A transaction ran, but its compares did not hold; says why.
    CompareFailed(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::NoLeader => write!(
                f,
                "no leader: the cluster has not elected one (is a majority up?)"
            ),
            CliError::Unreachable(errors) => {
                write!(f, "no endpoint reachable: {}", errors.join("; "))
            }
            CliError::Deadline(last) => write!(
                f,
                "deadline passed before the request succeeded (last error: {last})"
            ),
            CliError::Refused(status) => write!(f, "request refused: {}", status.message()),
            CliError::Usage(why) => write!(f, "{why}"),
            CliError::CompareFailed(why) => write!(f, "compare failed: {why}"),
        }
    }
}

impl std::error::Error for CliError {}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NoLeader => 3,
            CliError::Unreachable(_) => 4,
            CliError::Deadline(_) => 5,
            CliError::CompareFailed(_) => 6,
        }
    }
}

/// One endpoint's answer to Status, or why it did not answer.
#[derive(Debug)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub result: Result<StatusResponse, Status>,
}

/// The endpoints and the deadline for one command.
#[derive(Debug)]
pub struct Cluster {
    endpoints: Vec<String>,
    deadline: Duration,
    /// The endpoint last found to be the leader.
    leader: Option<String>,
}

impl Cluster {
    pub fn new(endpoints: Vec<String>, deadline: Duration) -> Self {
        Cluster {
            endpoints,
            deadline,
            leader: None,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// How long a command keeps trying.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn channel(endpoint: &str, timeout: Duration) -> Result<Channel, Status> {
        let timeouts = ChannelTimeouts {
            connect: PROBE_TIMEOUT,
            request: Some(timeout),
        };
        lazy_channel(endpoint, TcpConnector, timeouts)
            .map_err(|e| Status::invalid_argument(format!("bad endpoint {endpoint}: {e}")))
    }

    /// A KV client on `endpoint`.
    pub fn kv(&self, endpoint: &str) -> Result<KvClient<Channel>, Status> {
        Ok(KvClient::new(Self::channel(endpoint, self.deadline)?))
    }

    /// Maintenance.Status of every endpoint.
    pub async fn statuses(&self) -> Vec<EndpointStatus> {
        let calls = self.endpoints.iter().map(|endpoint| async move {
            let result = async {
                let mut client = MaintenanceClient::new(Self::channel(endpoint, PROBE_TIMEOUT)?);
                Ok(client.status(StatusRequest {}).await?.into_inner())
            }
            .await;
            EndpointStatus {
                endpoint: endpoint.clone(),
                result,
            }
        });
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await);
        }
        out
    }

    /// The leader's client endpoint, asking the given endpoints once.
    pub async fn find_leader(&mut self) -> Result<String, CliError> {
        let statuses = self.statuses().await;
        let mut unreachable = Vec::new();
        for s in &statuses {
            match &s.result {
                Err(e) => unreachable.push(format!("{}: {}", s.endpoint, e.message())),
                Ok(r) if r.leader != 0 => {
                    let leader = self.endpoint_of(&s.endpoint, r, &statuses).await;
                    if let Some(leader) = leader {
                        self.leader = Some(leader.clone());
                        return Ok(leader);
                    }
                }
                Ok(_) => {}
            }
        }
        if unreachable.len() == statuses.len() {
            Err(CliError::Unreachable(unreachable))
        } else {
            Err(CliError::NoLeader)
        }
    }

    /// Where to reach the leader `r` names: one of the endpoints if it
    /// answered as that member, else the leader's client URL.
    async fn endpoint_of(
        &self,
        asked: &str,
        r: &StatusResponse,
        all: &[EndpointStatus],
    ) -> Option<String> {
        for s in all {
            if let Ok(other) = &s.result
                && other
                    .header
                    .as_ref()
                    .is_some_and(|h| h.member_id == r.leader)
            {
                return Some(s.endpoint.clone());
            }
        }
        let mut client = ClusterClient::new(Self::channel(asked, PROBE_TIMEOUT).ok()?);
        let members = client
            .member_list(MemberListRequest {
                linearizable: false,
            })
            .await
            .ok()?;
        let member = members
            .into_inner()
            .members
            .into_iter()
            .find(|m| m.id == r.leader)?;
        let url = member.client_ur_ls.first()?;
        Some(
            url.trim_start_matches("http://")
                .trim_start_matches("https://")
                .to_string(),
        )
    }

    /// Runs `call` against the leader, finding it first and again after
    /// errors that mean "try elsewhere", until the deadline.
    pub async fn on_leader<T, F, Fut>(&mut self, mut call: F) -> Result<T, CliError>
    where
        F: FnMut(KvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let mut last = String::from("none");
        loop {
            if started.elapsed() >= self.deadline {
                return Err(CliError::Deadline(last));
            }
            let leader = match self.leader.clone() {
                Some(l) => l,
                None => match self.find_leader().await {
                    Ok(l) => l,
                    Err(e @ (CliError::NoLeader | CliError::Unreachable(_))) => {
                        last = e.to_string();
                        if started.elapsed() + RETRY_PAUSE >= self.deadline {
                            return Err(e);
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let client = self.kv(&leader).map_err(CliError::Refused)?;
            match call(client).await {
                Ok(v) => return Ok(v),
                Err(status) if retryable(&status) => {
                    last = format!("{leader}: {}", status.message());
                    self.leader = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(status) => return Err(CliError::Refused(status)),
            }
        }
    }
}

/// Errors after which another attempt (maybe on another node) may work.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}
