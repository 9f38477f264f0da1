//! Bad client input gets a clear error, and the node keeps serving.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::TestCluster;
use konsen_rpc::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use konsen_rpc::etcd::etcdserverpb::{
    CompactionRequest, Compare, DefragmentRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    compare, request_op,
};
use konsen_storage::TXN_DEPTH_MAX;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_etcd_errors_and_the_node_keeps_serving() {
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(&[1]).await;
    let mut kv = cluster.kv(1);

    let empty = kv.put(PutRequest::default()).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(empty.message(), "etcdserver: key is not provided");

    let empty_read = kv.range(RangeRequest::default()).await.unwrap_err();
    assert_eq!(empty_read.message(), "etcdserver: key is not provided");

    // Over request_bytes_max (1.5 MiB), within gRPC's allowance.
    let big = PutRequest {
        key: b"big".to_vec(),
        value: vec![b'x'; 1_600_000].into(),
        ..Default::default()
    };
    let too_large = kv.put(big).await.unwrap_err();
    assert_eq!(too_large.code(), Code::InvalidArgument);
    assert_eq!(too_large.message(), "etcdserver: request is too large");

    // Far over: refused by gRPC's own message limit.
    let huge = PutRequest {
        key: b"huge".to_vec(),
        value: vec![b'x'; 4 * 1024 * 1024].into(),
        ..Default::default()
    };
    let huge = kv.put(huge).await.unwrap_err();
    assert_eq!(huge.code(), Code::ResourceExhausted, "{huge:?}");

    // A service konsen does not serve yet.
    let defrag = MaintenanceClient::new(cluster.channel(1))
        .defragment(DefragmentRequest {})
        .await
        .unwrap_err();
    assert_eq!(defrag.code(), Code::Unimplemented, "{defrag:?}");

    // Malformed transactions: etcd's errors, nothing proposed.
    let put = |key: &str, bytes: usize| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: vec![b'x'; bytes].into(),
            ..Default::default()
        })),
    };
    let compare = |key: &str| Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Version as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::Version(0)),
    };
    let txn = |compare: Vec<Compare>, success: Vec<RequestOp>| TxnRequest {
        compare,
        success,
        failure: Vec::new(),
    };
    let mut nested = txn(vec![], vec![put("deep", 1)]);
    for _ in 0..TXN_DEPTH_MAX {
        nested = txn(
            vec![],
            vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(nested)),
            }],
        );
    }
    let old_read = RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: b"k".to_vec(),
            revision: -1,
            ..Default::default()
        })),
    };
    for (bad, code, message) in [
        (
            txn(vec![], (0..129).map(|i| put(&format!("k{i}"), 1)).collect()),
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        (
            txn(
                (0..129).map(|i| compare(&format!("k{i}"))).collect(),
                vec![],
            ),
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        (
            txn(vec![], vec![put("d", 1), put("d", 2)]),
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            txn(vec![compare("")], vec![]),
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            txn(vec![], vec![put("big", 1_600_000)]),
            Code::InvalidArgument,
            "etcdserver: request is too large",
        ),
        (nested, Code::InvalidArgument, "nested too deep"),
        (
            txn(vec![], vec![old_read]),
            Code::InvalidArgument,
            "etcdserver: revision -1 is negative",
        ),
    ] {
        let e = kv.txn(bad).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(message), "{e:?}");
    }
    let negative = kv
        .range(RangeRequest {
            key: b"k".to_vec(),
            revision: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument, "{negative:?}");
    let compact = kv
        .compact(CompactionRequest {
            revision: 1_000_000,
            physical: false,
        })
        .await
        .unwrap_err();
    assert_eq!(compact.code(), Code::OutOfRange, "{compact:?}");
    assert_eq!(
        compact.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );

    // Garbage on the gRPC port: the connection is dropped, nothing else.
    for garbage in [
        &b"\x00\x01\x02 not http/2 at all \xff\xfe"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x08\x00\x00\x00\x00\x00",
    ] {
        let mut stream = std::net::TcpStream::connect(cluster.endpoint(1)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = stream.write_all(garbage);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }

    cluster.put_retrying(1, "still", "serving").await;
    assert_eq!(
        cluster.get(1, "still", false).await.unwrap().as_deref(),
        Some("serving")
    );
}

#[test]
fn a_bad_config_names_the_field_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yml");
    std::fs::write(&config, "endpoints: [127.0.0.1:1]\nelection_ticks: 0\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_konsen-server"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("election_ticks"), "{stderr}");
    assert!(stderr.contains(config.to_str().unwrap()), "{stderr}");
}

/// A client whose end of the connection went silent (a partition, a
/// frozen process) is pinged after 10 s and dropped 5 s later, so that its
/// streams and their waiters do not live on.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_answers_no_ping_is_closed() {
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(&[1]).await;
    let endpoint = cluster.endpoint(1).to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(endpoint).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // The client preface and an empty SETTINGS frame; nothing after.
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .unwrap();
        let started = std::time::Instant::now();
        let (mut received, mut pinged_at) = (Vec::new(), None);
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return (pinged_at, started.elapsed()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "the connection stayed open for {:?}: {e}",
                    started.elapsed()
                ),
            }
            // Frames: a 24-bit length, a type (6 is PING), flags, stream.
            while received.len() >= 9 {
                let len = usize::from(received[0]) << 16
                    | usize::from(received[1]) << 8
                    | usize::from(received[2]);
                if received.len() < 9 + len {
                    break;
                }
                if received[3] == 6 && pinged_at.is_none() {
                    pinged_at = Some(started.elapsed());
                }
                received.drain(..9 + len);
            }
        }
    })
    .await
    .unwrap();
    let (pinged_at, closed_at) = outcome;
    let pinged_at = pinged_at.expect("a PING before the connection closed");
    assert!(
        pinged_at >= Duration::from_secs(9) && pinged_at < Duration::from_secs(13),
        "pinged after {pinged_at:?}"
    );
    let unanswered = closed_at - pinged_at;
    assert!(
        unanswered >= Duration::from_secs(4) && unanswered < Duration::from_secs(8),
        "closed {unanswered:?} after an unanswered ping"
    );
}
