//! KV Put on the wire, as `put.rs` serves it without a task per call: the
//! cases a gRPC client library rarely produces, sent frame by frame with a
//! bare HTTP/2 client.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestCluster, WAIT_MAX};
use http::{HeaderMap, Request};
use konsen_rpc::etcd::etcdserverpb::{PutRequest, PutResponse};
use prost::Message;
use tonic::{Code, Status};

/// Headers a test adds to a call.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// One Put call's answer: its status, and its message if it succeeded.
struct Answer {
    status: Status,
    message: Option<PutResponse>,
}

/// A connection to node `id` of `cluster`.
async fn connect(cluster: &TestCluster, id: u64) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(cluster.endpoint(id))
        .await
        .expect("connecting");
    let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    send
}

/// A Put request's body: the gRPC prefix (declaring `declared` bytes, or
/// the message's own length) and the message.
fn body(key: &str, declared: Option<u32>) -> Bytes {
    let message = PutRequest {
        key: key.as_bytes().to_vec(),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&declared.unwrap_or(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    Bytes::from(body)
}

/// Sends a Put with `headers` added, its body after `delay` (in pieces
/// of at most `piece` bytes), and reads the answer.
async fn put(
    send: &mut h2::client::SendRequest<Bytes>,
    headers: Headers<'_>,
    body: Bytes,
    delay: Duration,
    piece: usize,
) -> Answer {
    let mut request = Request::post("http://konsen/etcdserverpb.KV/Put")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).unwrap();
    send.clone().ready().await.expect("connection ready");
    let (response, mut stream) = send
        .send_request(request, false)
        .expect("sending a request");
    tokio::time::sleep(delay).await;
    // A call refused on its headers may be answered, and its stream
    // closed, before its body goes out: then sending fails, as it may.
    let mut rest = body;
    while rest.len() > piece {
        let _ = stream.send_data(rest.split_to(piece), false);
        tokio::time::sleep(delay).await;
    }
    let _ = stream.send_data(rest, true);

    let response = tokio::time::timeout(WAIT_MAX, response)
        .await
        .expect("an answer in time")
        .expect("an answer");
    let (parts, mut body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        // A trailers-only answer: the status is in the headers.
        return Answer {
            status,
            message: None,
        };
    }
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("answer data");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers: HeaderMap = body.trailers().await.unwrap().expect("trailers");
    let status = Status::from_header_map(&trailers).expect("a grpc-status trailer");
    let message =
        (data.len() >= 5).then(|| PutResponse::decode(&data[5..]).expect("a PutResponse"));
    Answer { status, message }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_is_answered_however_its_frames_arrive_and_bad_ones_get_grpc_errors() {
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(&[1]).await;
    cluster.put_retrying(1, "warm", "up").await;
    let mut send = connect(&cluster, 1).await;

    // All at once: the connection's task answers it itself.
    let at_once = put(&mut send, &[], body("a", None), Duration::ZERO, usize::MAX).await;
    assert_eq!(at_once.status.code(), Code::Ok, "{:?}", at_once.status);
    let first = at_once.message.expect("a PutResponse").header.unwrap();

    // The body a while after the headers, in three pieces: a task waits
    // for the rest.
    let late = put(
        &mut send,
        &[],
        body("b", None),
        Duration::from_millis(150),
        4,
    )
    .await;
    assert_eq!(late.status.code(), Code::Ok, "{:?}", late.status);
    let second = late.message.expect("a PutResponse").header.unwrap();
    assert_eq!(second.revision, first.revision + 1);
    assert_eq!(
        cluster.get(1, "b", false).await.unwrap().as_deref(),
        Some("v")
    );

    // A deadline the client set, far enough away.
    let timed = put(
        &mut send,
        &[("grpc-timeout", "5S")],
        body("c", None),
        Duration::ZERO,
        usize::MAX,
    )
    .await;
    assert_eq!(timed.status.code(), Code::Ok, "{:?}", timed.status);

    // Refused: compressed, a malformed deadline, and a prefix promising
    // more than the body holds.
    let refused: [(Headers, Bytes, Code); 3] = [
        (
            &[("grpc-encoding", "gzip")],
            body("d", None),
            Code::Unimplemented,
        ),
        (
            &[("grpc-timeout", "soon")],
            body("d", None),
            Code::InvalidArgument,
        ),
        (&[], body("d", Some(1000)), Code::Internal),
    ];
    for (headers, body, code) in refused {
        let answer = put(&mut send, headers, body, Duration::ZERO, usize::MAX).await;
        assert_eq!(
            answer.status.code(),
            code,
            "{headers:?}: {:?}",
            answer.status
        );
    }

    // None of them was applied.
    assert_eq!(cluster.get(1, "d", false).await.unwrap(), None);
}
