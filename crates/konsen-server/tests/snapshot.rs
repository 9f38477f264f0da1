//! Log compaction and snapshots with real processes: a follower that
//! missed more than the leader kept catches up through a snapshot, also
//! when killed in the middle of receiving one, and ends with the same
//! key-value state as every other node (compared by `HashKV`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{FAST_ELECTIONS, TestCluster, WAIT_MAX};
use konsen_rpc::etcd::etcdserverpb::PutRequest;

/// Puts `count` keys (`prefix-i`, `value_bytes` each) through `via`,
/// `concurrency` at a time.
async fn write_keys(
    cluster: &TestCluster,
    via: u64,
    prefix: &str,
    count: usize,
    value_bytes: usize,
    concurrency: usize,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut kv = cluster.kv(via);
        let next = Arc::clone(&next);
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= count {
                    return;
                }
                let request = PutRequest {
                    key: format!("{prefix}-{:05}", i % 1000).into_bytes(),
                    value: vec![b'a' + (i % 26) as u8; value_bytes].into(),
                    ..Default::default()
                };
                let started = Instant::now();
                while let Err(e) = kv.put(request.clone()).await {
                    assert!(started.elapsed() < WAIT_MAX, "put kept failing: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
}

/// Waits until node `id`'s log contains `line`.
async fn wait_for_log(cluster: &TestCluster, id: u64, line: &str) {
    let started = Instant::now();
    while !cluster.log(id).contains(line) {
        assert!(
            started.elapsed() < WAIT_MAX,
            "node {id} never logged {line:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fast elections, and logs compacted every 200 entries (50 kept), so that
/// a follower down for a while needs a snapshot.
fn compacting_settings(chunk_bytes_max: usize) -> String {
    format!(
        "{FAST_ELECTIONS}snapshot_entries_max: 200\nsnapshot_tail_entries: 50\n\
         snapshot_chunk_bytes_max: {chunk_bytes_max}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_far_behind_catches_up_through_a_snapshot_under_writes() {
    let mut cluster = TestCluster::start_with(3, &compacting_settings(4096));
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.others(leader)[0];
    write_keys(&cluster, leader, "early", 300, 100, 8).await;
    cluster.kill(follower);
    // Far past what the leader keeps: its log is compacted several times.
    write_keys(&cluster, leader, "late", 2000, 100, 16).await;
    let status = cluster.status(leader).await.unwrap();
    assert!(
        status.konsen_snapshot_index > 1000,
        "the leader compacted its log: {status:?}"
    );

    // Writes go on while the follower restarts and catches up.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut kv = cluster.kv(leader);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut i, mut acknowledged) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let request = PutRequest {
                    key: format!("during-{}", i % 100).into_bytes(),
                    value: i.to_string().into_bytes().into(),
                    ..Default::default()
                };
                if kv.put(request).await.is_ok() {
                    acknowledged += 1;
                }
                i += 1;
            }
            acknowledged
        })
    };
    cluster.spawn(follower);
    wait_for_log(&cluster, follower, "installed snapshot at index").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.unwrap();
    assert!(during > 0, "writes were acknowledged during the catch-up");

    let (revision, _) = cluster.wait_for_same_state(&[1, 2, 3]).await;
    assert!(revision > 2300, "every write is there: revision {revision}");
    let status = cluster.status(follower).await.unwrap();
    assert!(status.konsen_snapshot_index > 0, "{status:?}");
    // The follower serves what it got through the snapshot.
    let value = cluster.get(follower, "late-00500", true).await.unwrap();
    assert_eq!(value.map(|v| v.len()), Some(100));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_killed_while_receiving_a_snapshot_recovers() {
    let mut cluster = TestCluster::start_with(3, &compacting_settings(65536));
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.others(leader)[0];
    cluster.kill(follower);
    // About 16 MiB of state, so that receiving it takes a while.
    write_keys(&cluster, leader, "big", 2000, 16 * 1024, 16).await;

    let mut interrupted = 0;
    for _ in 0..3 {
        let before = cluster.log(follower).matches("installed snapshot").count();
        cluster.spawn(follower);
        wait_for_log(&cluster, follower, "receiving snapshot at index").await;
        cluster.kill(follower);
        if cluster.log(follower).matches("installed snapshot").count() == before {
            interrupted += 1;
        }
        // Mark the restart in the log, so the next round waits for its own
        // "receiving" line.
        let log = cluster.dir.path().join(format!("node-{follower}.log"));
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::write(
            &log,
            text.replace("receiving snapshot at index", "(was) receiving"),
        )
        .unwrap();
        if interrupted > 0 {
            break;
        }
    }
    assert!(interrupted > 0, "no kill landed inside a transfer");

    cluster.spawn(follower);
    cluster.wait_for_same_state(&[1, 2, 3]).await;
    // The interrupted install left nothing behind: the node needed (and
    // received) the snapshot again.
    assert!(
        cluster
            .log(follower)
            .contains("receiving snapshot at index"),
        "the restarted node did not need the snapshot again\n{}",
        cluster.log(follower)
    );
    write_keys(&cluster, leader, "after", 10, 10, 1).await;
    cluster.wait_for_same_state(&[1, 2, 3]).await;
}
