//! The CLI's commands: set, get, del, status, leader. Each returns the text
//! to print, in the chosen output format.

use konsen_rpc::etcd::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use serde_json::json;

use crate::client::{CliError, Cluster};
use crate::output::{kv_json, table, text};

/// `--write-out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The end of the range of keys that start with `prefix` (etcd's rule: the
/// prefix with its last byte below 0xff incremented; `[0]`, every key, if
/// there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub async fn set(
    cluster: &mut Cluster,
    key: &str,
    value: &str,
    format: Format,
) -> Result<String, CliError> {
    let request = PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_owned().into_bytes().into(),
        ..Default::default()
    };
    let response = cluster
        .on_leader(|mut kv| {
            let request = request.clone();
            async move { Ok(kv.put(request).await?.into_inner()) }
        })
        .await?;
    let revision = response.header.map_or(0, |h| h.revision);
    Ok(match format {
        Format::Table => "OK".to_string(),
        Format::Json => json!({ "ok": true, "revision": revision }).to_string(),
    })
}

pub async fn get(
    cluster: &mut Cluster,
    key: &str,
    prefix: bool,
    serializable: bool,
    format: Format,
) -> Result<String, CliError> {
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: if prefix {
            prefix_end(key.as_bytes())
        } else {
            Vec::new()
        },
        serializable,
        ..Default::default()
    };
    let response = if serializable {
        serializable_get(cluster, request).await?
    } else {
        cluster
            .on_leader(|mut kv| {
                let request = request.clone();
                async move { Ok(kv.range(request).await?.into_inner()) }
            })
            .await?
    };
    Ok(match format {
        Format::Table => {
            if !prefix {
                // A single key prints its value, like the seed's prompt.
                return Ok(response
                    .kvs
                    .first()
                    .map_or_else(String::new, |kv| text(&kv.value)));
            }
            let rows: Vec<Vec<String>> = response
                .kvs
                .iter()
                .map(|kv| vec![text(&kv.key), text(&kv.value)])
                .collect();
            table(&["KEY", "VALUE"], &rows)
        }
        Format::Json => json!({
            "revision": response.header.map_or(0, |h| h.revision),
            "count": response.count,
            "kvs": response.kvs.iter().map(kv_json).collect::<Vec<_>>(),
        })
        .to_string(),
    })
}

/// A serializable read from the first endpoint that answers.
async fn serializable_get(
    cluster: &mut Cluster,
    request: RangeRequest,
) -> Result<konsen_rpc::etcd::etcdserverpb::RangeResponse, CliError> {
    let mut errors = Vec::new();
    for endpoint in cluster.endpoints().to_vec() {
        let mut kv = cluster.kv(&endpoint).map_err(CliError::Refused)?;
        match kv.range(request.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::InvalidArgument => return Err(CliError::Refused(s)),
            Err(s) => errors.push(format!("{endpoint}: {}", s.message())),
        }
    }
    Err(CliError::Unreachable(errors))
}

pub async fn del(
    cluster: &mut Cluster,
    key: &str,
    prefix: bool,
    format: Format,
) -> Result<String, CliError> {
    let request = DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: if prefix {
            prefix_end(key.as_bytes())
        } else {
            Vec::new()
        },
        prev_kv: false,
    };
    let response = cluster
        .on_leader(|mut kv| {
            let request = request.clone();
            async move { Ok(kv.delete_range(request).await?.into_inner()) }
        })
        .await?;
    Ok(match format {
        Format::Table => response.deleted.to_string(),
        Format::Json => json!({ "deleted": response.deleted }).to_string(),
    })
}

pub async fn status(cluster: &mut Cluster, format: Format) -> Result<String, CliError> {
    let statuses = cluster.statuses().await;
    if statuses.iter().all(|s| s.result.is_err()) {
        return Err(CliError::Unreachable(
            statuses
                .iter()
                .filter_map(|s| {
                    s.result
                        .as_ref()
                        .err()
                        .map(|e| format!("{}: {}", s.endpoint, e.message()))
                })
                .collect(),
        ));
    }
    let mut rows = Vec::new();
    let mut objects = Vec::new();
    for s in &statuses {
        match &s.result {
            Ok(r) => {
                let id = r.header.as_ref().map_or(0, |h| h.member_id);
                let role = match r.leader {
                    0 => "no leader",
                    l if l == id => "leader",
                    _ => "follower",
                };
                let leader = if r.leader == 0 {
                    "-".to_string()
                } else {
                    r.leader.to_string()
                };
                rows.push(vec![
                    s.endpoint.clone(),
                    id.to_string(),
                    role.to_string(),
                    r.raft_term.to_string(),
                    leader,
                    r.raft_index.to_string(),
                    r.raft_applied_index.to_string(),
                    r.konsen_snapshot_index.to_string(),
                    r.db_size.to_string(),
                ]);
                objects.push(json!({
                    "endpoint": s.endpoint, "node_id": id, "role": role, "term": r.raft_term,
                    "leader": r.leader, "commit_index": r.raft_index,
                    "applied_index": r.raft_applied_index,
                    "snapshot_index": r.konsen_snapshot_index, "data_size_bytes": r.db_size,
                    "version": r.version,
                }));
            }
            Err(e) => {
                let mut row = vec![
                    s.endpoint.clone(),
                    "-".into(),
                    format!("unreachable: {}", e.message()),
                ];
                row.extend(std::iter::repeat_n("-".to_string(), 6));
                rows.push(row);
                objects.push(json!({ "endpoint": s.endpoint, "error": e.message() }));
            }
        }
    }
    Ok(match format {
        Format::Table => table(
            &[
                "ENDPOINT",
                "NODE ID",
                "ROLE",
                "TERM",
                "LEADER",
                "COMMIT INDEX",
                "APPLIED INDEX",
                "SNAPSHOT INDEX",
                "DATA SIZE",
            ],
            &rows,
        ),
        Format::Json => serde_json::Value::Array(objects).to_string(),
    })
}

pub async fn leader(cluster: &mut Cluster, format: Format) -> Result<String, CliError> {
    let endpoint = cluster.find_leader().await?;
    Ok(match format {
        Format::Table => endpoint,
        Format::Json => json!({ "leader": endpoint }).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
