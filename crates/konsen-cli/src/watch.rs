//! `watch KEY [--prefix] [--rev N]`: prints the events of a key or a
//! prefix as they happen, until Ctrl-C. Any node serves a watch. When the
//! stream breaks (the node died, a partition), it resumes on the next
//! endpoint from the revision after the last event printed, so no event is
//! lost or printed twice; it gives up once no endpoint has answered for
//! `--deadline`.

use std::time::{Duration, Instant};

use konsen_rpc::etcd::etcdserverpb::{
    WatchCreateRequest, WatchRequest, watch_client::WatchClient, watch_request::RequestUnion,
};
use konsen_rpc::etcd::mvccpb::{Event, event::EventType};
use konsen_rpc::net::{ChannelTimeouts, TcpConnector, lazy_channel};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::client::{CliError, Cluster};
use crate::commands::{Format, prefix_end};
use crate::output::{kv_json, text};

/// How long connecting to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before trying the next endpoint after a broken stream.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Requests queued for the watch stream (only the create is sent).
const REQUESTS_MAX: usize = 4;

/// Why one watch stream ended.
enum Ended {
    /// Ctrl-C.
    Interrupted,
    /// The server canceled the watch (a compacted revision, a bad range).
    Canceled(String),
}

pub async fn watch(
    cluster: &Cluster,
    key: &str,
    prefix: bool,
    revision: i64,
    format: Format,
) -> Result<(), CliError> {
    if revision < 0 {
        return Err(CliError::Usage(format!(
            "--rev {revision}: a revision is 0 (from now on) or more"
        )));
    }
    let create = WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: if prefix {
            prefix_end(key.as_bytes())
        } else {
            Vec::new()
        },
        start_revision: revision,
        ..WatchCreateRequest::default()
    };
    let endpoints = cluster.endpoints().to_vec();
    // The first revision not printed yet; 0 until the first stream says
    // where "now" is.
    let mut next = revision;
    let mut answered = Instant::now();
    let mut errors = Vec::new();
    let mut attempt = 0;
    loop {
        let endpoint = &endpoints[attempt % endpoints.len()];
        attempt += 1;
        let mut create = create.clone();
        create.start_revision = next;
        match watch_on(endpoint, create, &mut next, &mut answered, format).await {
            Ok(Ended::Interrupted) => return Ok(()),
            Ok(Ended::Canceled(reason)) => {
                return Err(CliError::Refused(Status::out_of_range(reason)));
            }
            Err(status) => {
                eprintln!(
                    "watch: {endpoint}: {}; resuming from revision {next} on the next endpoint",
                    status.message()
                );
                errors.push(format!("{endpoint}: {}", status.message()));
                if answered.elapsed() >= cluster.deadline() {
                    return Err(CliError::Unreachable(errors));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Watches on one endpoint until Ctrl-C, a cancel or an error; keeps
/// `next` after the last event printed and `answered` at the last answer.
async fn watch_on(
    endpoint: &str,
    create: WatchCreateRequest,
    next: &mut i64,
    answered: &mut Instant,
    format: Format,
) -> Result<Ended, Status> {
    let timeouts = ChannelTimeouts {
        connect: CONNECT_TIMEOUT,
        // A watch lasts as long as it is wanted.
        request: None,
    };
    let channel = lazy_channel(endpoint, TcpConnector, timeouts)
        .map_err(|e| Status::invalid_argument(format!("bad endpoint {endpoint}: {e}")))?;
    let (tx, rx) = mpsc::channel(REQUESTS_MAX);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    })
    .await
    .map_err(|_| Status::internal("the watch request queue closed"))?;
    let mut stream = WatchClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        let response = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Ended::Interrupted),
            response = stream.message() => response?,
        };
        let Some(response) = response else {
            return Err(Status::unavailable("the server ended the watch stream"));
        };
        *answered = Instant::now();
        if response.canceled {
            let reason = if response.compact_revision != 0 {
                format!(
                    "etcdserver: mvcc: required revision has been compacted (the oldest \
                     revision left is {})",
                    response.compact_revision
                )
            } else {
                response.cancel_reason
            };
            return Ok(Ended::Canceled(reason));
        }
        if response.created && *next == 0 {
            *next = response.header.map_or(0, |h| h.revision) + 1;
        }
        for event in &response.events {
            println!("{}", render(event, format));
            if let Some(kv) = &event.kv {
                *next = (*next).max(kv.mod_revision + 1);
            }
        }
    }
}

/// An event as etcdctl prints it (type, key, value on three lines), or as
/// one line of JSON.
fn render(event: &Event, format: Format) -> String {
    let kind = if event.r#type == EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    };
    let kv = event.kv.clone().unwrap_or_default();
    match format {
        Format::Table => format!("{kind}\n{}\n{}", text(&kv.key), text(&kv.value)),
        Format::Json => json!({ "type": kind, "kv": kv_json(&kv) }).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use konsen_rpc::etcd::mvccpb::KeyValue;

    #[test]
    fn events_print_as_etcdctl_prints_them() {
        let event = Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                mod_revision: 9,
                ..KeyValue::default()
            }),
            prev_kv: None,
        };
        assert_eq!(render(&event, Format::Table), "DELETE\nk\n");
        let put = Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                value: b"v".to_vec().into(),
                ..KeyValue::default()
            }),
            prev_kv: None,
        };
        assert_eq!(render(&put, Format::Table), "PUT\nk\nv");
        assert!(render(&put, Format::Json).contains(r#""type":"PUT""#));
    }
}
