//! The Rust `etcd-client` crate, unchanged, against a konsen cluster: a
//! counter that several tasks increment by compare-and-swap (read, then a
//! Txn comparing the mod_revision) loses no increment, each task talking to
//! a different node (so two of them are forwarded by followers); and the
//! KV calls that crate exposes for history (`prev_kv`, a read at a
//! revision, compaction and its error) behave as on etcd.

mod common;

use common::TestCluster;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};

/// Tasks incrementing the counter at once.
const TASKS: u64 = 4;
/// Increments each task makes.
const INCREMENTS: u64 = 25;
/// Attempts one task may make (a failed compare is one); the loop ends.
const ATTEMPTS_MAX: u64 = 5_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_cas_counter_through_etcd_client_loses_no_increment() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut client = Client::connect(&cluster.endpoints, None).await.unwrap();
    client.put("counter", "0", None).await.unwrap();

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let endpoint = cluster.endpoints[t as usize % cluster.endpoints.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect([endpoint], None).await.unwrap();
            let (mut done, mut conflicts) = (0, 0);
            for _ in 0..ATTEMPTS_MAX {
                if done == INCREMENTS {
                    break;
                }
                let got = c.get("counter", None).await.unwrap();
                let kv = &got.kvs()[0];
                let n: u64 = kv.value_str().unwrap().parse().unwrap();
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        "counter",
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([TxnOp::put("counter", (n + 1).to_string(), None)])
                    .or_else([TxnOp::get("counter", None)]);
                let answer = c.txn(txn).await.unwrap();
                if answer.succeeded() {
                    done += 1;
                } else {
                    // The failure branch ran: it read the counter.
                    assert!(matches!(
                        &answer.op_responses()[..],
                        [TxnOpResponse::Get(g)] if g.kvs()[0].mod_revision() > kv.mod_revision()
                    ));
                    conflicts += 1;
                }
            }
            assert_eq!(done, INCREMENTS, "task {t} ran out of attempts");
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let got = client.get("counter", None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!(
        kv.value_str().unwrap(),
        (TASKS * INCREMENTS).to_string(),
        "{conflicts} conflicts"
    );
    // One version per successful swap, after the first put.
    assert_eq!(kv.version() as u64, TASKS * INCREMENTS + 1);
    eprintln!(
        "{} increments, {conflicts} failed compares",
        TASKS * INCREMENTS
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_client_reads_history_and_compacts() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut client = Client::connect(&cluster.endpoints, None).await.unwrap();

    let first = client.put("k", "v1", None).await.unwrap();
    let rev1 = first.header().unwrap().revision();
    let second = client
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(second.prev_key().unwrap().value(), b"v1");
    let rev2 = second.header().unwrap().revision();
    assert_eq!(rev2, rev1 + 1);

    let old = client
        .get("k", Some(GetOptions::new().with_revision(rev1)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value(), b"v1");
    assert_eq!(old.kvs()[0].mod_revision(), rev1);

    let err = client
        .get("k", Some(GetOptions::new().with_revision(rev2 + 100)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("required revision is a future revision"),
        "{err}"
    );

    client
        .compact(rev2, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    let err = client
        .get("k", Some(GetOptions::new().with_revision(rev1)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("required revision has been compacted"),
        "{err}"
    );
    // The compacted revision itself is still readable.
    let at = client
        .get("k", Some(GetOptions::new().with_revision(rev2)))
        .await
        .unwrap();
    assert_eq!(at.kvs()[0].value(), b"v2");
}
