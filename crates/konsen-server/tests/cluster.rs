//! Clusters of real processes (one, three and five nodes): elections,
//! replication, crashes and restarts, and what happens without a majority.

mod common;

use std::time::Duration;

use common::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_elects_itself_and_serves() {
    let cluster = TestCluster::start(1);
    assert_eq!(cluster.wait_for_leader(&[1]).await, 1);
    cluster.put_retrying(1, "solo", "yes").await;
    assert_eq!(
        cluster.get(1, "solo", false).await.unwrap().as_deref(),
        Some("yes")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_elect_one_leader() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let terms: Vec<u64> = {
        let mut t = Vec::new();
        for id in 1..=3 {
            t.push(cluster.status(id).await.unwrap().raft_term);
        }
        t
    };
    assert!(
        terms.iter().all(|&t| t == terms[0] && t > 0),
        "terms differ: {terms:?}"
    );
    let header = cluster.status(leader).await.unwrap().header.unwrap();
    assert_eq!(header.member_id, leader);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_nodes_elect_a_leader_and_survive_two_failures() {
    let mut cluster = TestCluster::start(5);
    let leader = cluster.wait_for_leader(&[1, 2, 3, 4, 5]).await;
    cluster.put_retrying(leader, "five", "1").await;
    // Two nodes down, the leader among them: the other three still form a
    // majority, elect a leader and keep every acknowledged write.
    let other = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    cluster.kill(leader);
    cluster.kill(other);
    let alive: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader && id != other)
        .collect();
    let new_leader = cluster.wait_for_leader(&alive).await;
    assert_ne!(new_leader, leader);
    assert_eq!(
        cluster
            .get(alive[0], "five", false)
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    cluster.put_retrying(alive[1], "five", "2").await;
    assert_eq!(
        cluster
            .get(alive[2], "five", false)
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_through_a_follower_is_read_through_another_node() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let followers: Vec<u64> = cluster.others(leader);
    let put = cluster
        .put_retrying(followers[0], "name", "Lizhao Liu")
        .await;
    assert!(put.header.unwrap().revision >= 2);
    // A linearizable read sees it at once, through any node.
    assert_eq!(
        cluster
            .get(followers[1], "name", false)
            .await
            .unwrap()
            .as_deref(),
        Some("Lizhao Liu")
    );
    assert_eq!(
        cluster.get(leader, "name", false).await.unwrap().as_deref(),
        Some("Lizhao Liu")
    );
    // A serializable read sees it once that node has applied it.
    cluster
        .wait_for_value(followers[1], "name", "Lizhao Liu", true)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_a_leader_crash() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let via = cluster.ids()[i % 3];
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        if cluster.put(via, &key, &value).await.is_ok() {
            acknowledged.push((key, value));
        }
    }
    assert!(
        acknowledged.len() >= 15,
        "too few writes acknowledged: {}",
        acknowledged.len()
    );

    cluster.kill(leader);
    let survivors: Vec<u64> = cluster.others(leader);
    let new_leader = cluster.wait_for_leader(&survivors).await;
    assert_ne!(new_leader, leader);
    for (key, value) in &acknowledged {
        for &id in &survivors {
            assert_eq!(
                cluster.get(id, key, false).await.unwrap().as_deref(),
                Some(value.as_str()),
                "node {id} lost acknowledged {key}"
            );
        }
    }
    cluster.put_retrying(survivors[0], "after", "crash").await;
    cluster
        .wait_for_value(survivors[1], "after", "crash", false)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_follower_restarts_and_catches_up() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    cluster.put_retrying(leader, "before", "1").await;
    cluster.kill(follower);
    for i in 0..10 {
        cluster
            .put_retrying(leader, &format!("while-down-{i}"), &i.to_string())
            .await;
    }
    cluster.spawn(follower);
    cluster.wait_for_value(follower, "before", "1", true).await;
    cluster
        .wait_for_value(follower, "while-down-9", "9", true)
        .await;
    let status = cluster.status(follower).await.unwrap();
    assert_eq!(status.leader, leader);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_majority_writes_never_succeed() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    cluster.put_retrying(leader, "k", "before").await;
    let followers: Vec<u64> = cluster.others(leader);
    cluster.kill(followers[0]);
    cluster.kill(followers[1]);
    // Through the old leader, several times over the period in which it
    // notices it lost its quorum and steps down.
    for attempt in 0..3 {
        let result = cluster.put(leader, "k", &format!("after-{attempt}")).await;
        assert!(
            result.is_err(),
            "a write succeeded without a majority: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Linearizable reads cannot be confirmed either.
    assert!(cluster.get(leader, "k", false).await.is_err());
    // Serializable reads still answer from local state.
    assert_eq!(
        cluster.get(leader, "k", true).await.unwrap().as_deref(),
        Some("before")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_a_node_cleanly_and_it_restarts() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    cluster.put_retrying(leader, "durable", "yes").await;
    let status = cluster.terminate(leader);
    assert!(
        status.success(),
        "exit status after SIGTERM: {status:?}\n{}",
        cluster.log(leader)
    );
    assert!(cluster.log(leader).contains("SIGTERM"));
    cluster.spawn(leader);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    cluster.wait_for_value(leader, "durable", "yes", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_acknowledged_during_a_leader_crash_survive_it() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let followers: Vec<u64> = cluster.others(leader);
    let clients: Vec<_> = cluster.ids().into_iter().map(|id| cluster.kv(id)).collect();

    // Writers on every node, running through the crash.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (n, mut kv) in clients.into_iter().enumerate() {
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{n}-{i}");
                let request = konsen_rpc::etcd::etcdserverpb::PutRequest {
                    key: key.clone().into_bytes(),
                    value: key.clone().into_bytes().into(),
                    ..Default::default()
                };
                if kv.put(request).await.is_ok() {
                    acknowledged.push(key);
                }
                i += 1;
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() > 10,
        "too few writes acknowledged: {}",
        acknowledged.len()
    );

    cluster.wait_for_leader(&followers).await;
    for key in &acknowledged {
        let got = cluster.get(followers[0], key, false).await.unwrap();
        assert_eq!(
            got.as_deref(),
            Some(key.as_str()),
            "acknowledged write {key} lost"
        );
    }
    // The old leader comes back as a follower and converges.
    cluster.spawn(leader);
    let last = acknowledged.last().unwrap();
    cluster.wait_for_value(leader, last, last, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn followers_of_a_killed_leader_elect_a_new_one_before_their_timeout() {
    // Election timeouts of 3 to 6 s: a new leader within 2 s of the kill
    // can only come from the followers seeing the leader's streams break.
    let mut cluster =
        TestCluster::start_with(3, "tick_ms: 50\nheartbeat_ticks: 1\nelection_ticks: 60\n");
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    cluster.put_retrying(leader, "before", "1").await;
    let alive = cluster.others(leader);
    // The followers' streams from the leader are up once they heard it.
    for &id in &alive {
        cluster.wait_for_value(id, "before", "1", true).await;
    }
    cluster.kill(leader);
    let killed = std::time::Instant::now();
    let new_leader = cluster.wait_for_leader(&alive).await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a new leader took {took:?}, as long as an election timeout\n{}",
        cluster.logs()
    );
    assert!(
        cluster.log(alive[0]).contains("campaigning early")
            || cluster.log(alive[1]).contains("campaigning early")
    );
    cluster.put_retrying(new_leader, "after", "1").await;
}
