//! Watch through the Rust `etcd-client` crate, unchanged, against a konsen
//! cluster: every node's watchers see every committed change exactly once,
//! in revision order, a txn's changes in one response; a watch replays the
//! history from a revision with `prev_kv` and filters; cancel, duplicate
//! ids and progress requests answer as etcd's do; a compacted start
//! revision gets etcd's compacted cancel; a watcher that stops reading
//! falls behind the feed and catches up from the history, losing nothing.

mod common;

use std::time::Duration;

use common::TestCluster;
use etcd_client::{
    Client, CompactionOptions, EventType, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions,
    WatchResponse, WatchStream,
};

/// How long a test waits for one watch response.
const RESPONSE_WAIT_MAX: Duration = Duration::from_secs(10);

async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(RESPONSE_WAIT_MAX, stream.message())
        .await
        .expect("a watch response in time")
        .expect("the watch stream works")
        .expect("the watch stream is open")
}

/// An event as (key, is_put, mod_revision, value).
type Seen = (String, bool, i64, String);

fn seen(response: &WatchResponse) -> Vec<Seen> {
    response
        .events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            (
                kv.key_str().unwrap().to_string(),
                e.event_type() == EventType::Put,
                kv.mod_revision(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Reads responses until `count` events arrived; returns them with the
/// number of responses they came in.
async fn events(stream: &mut WatchStream, count: usize) -> (Vec<Seen>, Vec<Vec<Seen>>) {
    let mut all = Vec::new();
    let mut responses = Vec::new();
    while all.len() < count {
        let response = next(stream).await;
        assert!(!response.canceled(), "canceled: {response:?}");
        let events = seen(&response);
        all.extend(events.iter().cloned());
        responses.push(events);
    }
    assert_eq!(all.len(), count, "more events than written: {all:?}");
    (all, responses)
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_on_every_node_see_every_change_once_in_order() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut streams = Vec::new();
    for id in cluster.ids() {
        let mut c = Client::connect([cluster.endpoint(id)], None).await.unwrap();
        let mut stream = c
            .watch("w/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let created = next(&mut stream).await;
        assert!(created.created() && !created.canceled(), "{created:?}");
        streams.push((c, stream));
    }

    // Writes through every node (two of three are forwarded), one outside
    // the prefix, a delete and a txn of two puts.
    let mut expected: Vec<Seen> = Vec::new();
    let mut writers = Vec::new();
    for id in cluster.ids() {
        writers.push(Client::connect([cluster.endpoint(id)], None).await.unwrap());
    }
    for i in 0..30 {
        let w = &mut writers[i % 3];
        let key = format!("w/{i:02}");
        let rev = w.put(key.clone(), format!("v{i}"), None).await.unwrap();
        expected.push((key, true, rev.header().unwrap().revision(), format!("v{i}")));
        w.put("outside", "x", None).await.unwrap();
    }
    let del = writers[1].delete("w/00", None).await.unwrap();
    expected.push((
        "w/00".into(),
        false,
        del.header().unwrap().revision(),
        String::new(),
    ));
    let txn = writers[2]
        .txn(Txn::new().and_then([TxnOp::put("w/t1", "a", None), TxnOp::put("w/t2", "b", None)]))
        .await
        .unwrap();
    let txn_rev = txn.header().unwrap().revision();
    expected.push(("w/t1".into(), true, txn_rev, "a".into()));
    expected.push(("w/t2".into(), true, txn_rev, "b".into()));

    for (i, (_, stream)) in streams.iter_mut().enumerate() {
        let (all, responses) = events(stream, expected.len()).await;
        assert_eq!(all, expected, "node {}'s watcher", i + 1);
        assert!(
            responses
                .iter()
                .any(|r| r.iter().filter(|e| e.2 == txn_rev).count() == 2),
            "the txn's two events in one response: {responses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_replays_history_with_prev_kv_filters_cancel_and_progress() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut client = Client::connect(&cluster.endpoints, None).await.unwrap();
    let r1 = client.put("k", "v1", None).await.unwrap();
    let r1 = r1.header().unwrap().revision();
    client.put("k", "v2", None).await.unwrap();
    let r3 = client.delete("k", None).await.unwrap();
    let r3 = r3.header().unwrap().revision();
    client.put("k", "v3", None).await.unwrap();

    // On a follower: the history from r1, each event with what it replaced.
    let follower = cluster.others(cluster.wait_for_leader(&[1, 2, 3]).await)[0];
    let mut c = Client::connect([cluster.endpoint(follower)], None)
        .await
        .unwrap();
    let mut stream = c
        .watch(
            "k",
            Some(
                WatchOptions::new()
                    .with_start_revision(r1)
                    .with_prev_key()
                    .with_watch_id(7),
            ),
        )
        .await
        .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created() && created.watch_id() == 7, "{created:?}");
    let mut got = Vec::new();
    while got.len() < 4 {
        let response = next(&mut stream).await;
        assert_eq!(response.watch_id(), 7);
        for e in response.events() {
            got.push((
                e.event_type(),
                e.kv().unwrap().value_str().unwrap().to_string(),
                e.prev_kv().map(|p| p.value_str().unwrap().to_string()),
            ));
        }
    }
    assert_eq!(
        got,
        vec![
            (EventType::Put, "v1".into(), None),
            (EventType::Put, "v2".into(), Some("v1".into())),
            (EventType::Delete, "".into(), Some("v2".into())),
            (EventType::Put, "v3".into(), None),
        ]
    );

    // A second watcher on the same stream, without puts: the delete only.
    stream
        .watch(
            "k",
            Some(
                WatchOptions::new()
                    .with_start_revision(r1)
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await
        .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created(), "{created:?}");
    let nodel = created.watch_id();
    assert_ne!(nodel, 7);
    let response = next(&mut stream).await;
    assert_eq!(response.watch_id(), nodel);
    assert_eq!(
        seen(&response),
        vec![("k".into(), false, r3, String::new())]
    );

    // A duplicate id is refused as etcd refuses it.
    stream
        .watch("other", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    let refused = next(&mut stream).await;
    assert!(refused.created() && refused.canceled(), "{refused:?}");
    assert_eq!(refused.watch_id(), -1);
    assert!(refused.cancel_reason().contains("duplicate watch ID"));

    // Every watcher is at the live edge: a progress request answers.
    stream.request_progress().await.unwrap();
    let progress = next(&mut stream).await;
    assert_eq!(progress.watch_id(), -1, "{progress:?}");
    assert!(progress.events().is_empty());
    assert!(progress.header().unwrap().revision() > r3);

    // Cancel, then a put: only the canceled answer, no event for 7.
    stream.cancel(7).await.unwrap();
    let canceled = next(&mut stream).await;
    assert!(
        canceled.canceled() && canceled.watch_id() == 7,
        "{canceled:?}"
    );
    client.put("k", "v4", None).await.unwrap();
    let del = client.delete("k", None).await.unwrap();
    let response = next(&mut stream).await;
    assert_eq!(response.watch_id(), nodel, "{response:?}");
    let del = del.header().unwrap().revision();
    assert_eq!(
        seen(&response),
        vec![("k".into(), false, del, String::new())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() {
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(&[1]).await;
    let mut client = Client::connect(&cluster.endpoints, None).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..4 {
        let r = client.put("c", format!("{i}"), None).await.unwrap();
        revs.push(r.header().unwrap().revision());
    }
    client
        .compact(revs[2], Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    let mut stream = client
        .watch("c", Some(WatchOptions::new().with_start_revision(revs[0])))
        .await
        .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created(), "{created:?}");
    let compacted = next(&mut stream).await;
    assert!(compacted.canceled(), "{compacted:?}");
    assert_eq!(compacted.compact_revision(), revs[2]);
    assert_eq!(compacted.watch_id(), created.watch_id());

    // From the compacted revision itself: what is still there.
    let mut stream = client
        .watch("c", Some(WatchOptions::new().with_start_revision(revs[2])))
        .await
        .unwrap();
    assert!(next(&mut stream).await.created());
    let (all, _) = events(&mut stream, 2).await;
    assert_eq!(
        all.iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![revs[2], revs[3]]
    );
}

/// Writes sent while one watcher does not read, one at a time (one feed
/// batch each), in 4 KiB values: more than the HTTP/2 window and the
/// feed's ring (`WATCH_FEED_BATCHES_MAX`, 1024 batches) hold, so the
/// server's stream lags behind the feed and must read the history. (Run
/// with `KONSEN_UNSAFE_WATCH_IGNORE_GAPS=true`, which skips what a
/// stream missed, this test fails: its negative control.)
const SLOW_WRITES: usize = 3000;
const SLOW_WRITERS: usize = 1;

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_stops_reading_catches_up_without_losing_an_event() {
    let cluster = TestCluster::start(1);
    cluster.wait_for_leader(&[1]).await;
    let mut client = Client::connect(&cluster.endpoints, None).await.unwrap();
    let mut slow = client
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(next(&mut slow).await.created());

    let value = "x".repeat(4096);
    let mut tasks = Vec::new();
    for t in 0..SLOW_WRITERS {
        let mut c = client.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..SLOW_WRITES).step_by(SLOW_WRITERS) {
                c.put(format!("s/{i:05}"), value.clone(), None)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // A watcher created now, at the live edge, sees the next put only.
    let mut live = client
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(next(&mut live).await.created());
    let last = client
        .put("s/last", "end", Some(PutOptions::new()))
        .await
        .unwrap();
    let last = last.header().unwrap().revision();
    let (events_live, _) = events(&mut live, 1).await;
    assert_eq!(events_live[0].2, last);

    let (all, responses) = events(&mut slow, SLOW_WRITES + 1).await;
    let revisions: Vec<i64> = all.iter().map(|e| e.2).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "events out of order"
    );
    let mut keys: Vec<&str> = all.iter().map(|e| e.0.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), SLOW_WRITES + 1, "every key once");
    assert_eq!(*revisions.last().unwrap(), last);
    eprintln!(
        "{} events in {} responses to the slow watcher",
        all.len(),
        responses.len()
    );
}

/// A reader that takes `SLOW_READ` over each response, through an HTTP/2
/// window of a few responses, while writers run: it falls behind, catches
/// up from the history again and again, and must end at the last write.
/// (Auto-compaction is off: a reader far enough behind would otherwise be
/// canceled with the compacted revision, as etcd cancels it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_through_a_small_window_reaches_the_last_write() {
    use konsen_rpc::etcd::etcdserverpb::{
        WatchCreateRequest, WatchRequest, watch_client::WatchClient, watch_request::RequestUnion,
    };
    const SLOW_READ: Duration = Duration::from_millis(20);
    const WRITE_FOR: Duration = Duration::from_secs(4);
    let cluster = TestCluster::start_with(
        1,
        &format!(
            "{}auto_compaction_retention: \"0\"\n",
            common::FAST_ELECTIONS
        ),
    );
    cluster.wait_for_leader(&[1]).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.endpoint(1)))
            .unwrap()
            .initial_stream_window_size(8 * 1024)
            .connect_lazy();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"s/".to_vec(),
            range_end: b"s0".to_vec(),
            start_revision: 1,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut stream = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let client = Client::connect(&cluster.endpoints, None).await.unwrap();
    let mut writers = Vec::new();
    for t in 0..3 {
        let mut c = client.clone();
        writers.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut last = 0;
            let mut i = 0;
            while started.elapsed() < WRITE_FOR {
                let r = c
                    .put(format!("s/{t}/{i}"), format!("{i}"), None)
                    .await
                    .unwrap();
                last = r.header().unwrap().revision();
                i += 1;
            }
            last
        }));
    }
    let mut next = 1;
    let mut last = 0;
    let mut writing = true;
    let started = std::time::Instant::now();
    while writing || next <= last {
        assert!(
            started.elapsed() < WRITE_FOR + RESPONSE_WAIT_MAX,
            "the slow reader stopped at revision {next} of {last}\n{}",
            cluster
                .log(1)
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        if writing && writers.iter().all(|w| w.is_finished()) {
            writing = false;
            for w in writers.drain(..) {
                last = last.max(w.await.unwrap());
            }
        }
        let Ok(response) = tokio::time::timeout(Duration::from_millis(200), stream.message()).await
        else {
            continue;
        };
        let response = response.unwrap().expect("the stream stays open");
        assert!(!response.canceled, "canceled: {response:?}");
        for e in &response.events {
            let revision = e.kv.as_ref().unwrap().mod_revision;
            assert_eq!(revision, next.max(2), "events in order, none missing");
            next = revision + 1;
        }
        tokio::time::sleep(SLOW_READ).await;
    }
    drop(tx);
}
