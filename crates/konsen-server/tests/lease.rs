//! Leases through the Rust `etcd-client` crate, unchanged, against a
//! konsen cluster: grant (a short TTL raised to the minimum), put with a
//! lease on a follower, time to live with keys, leases list, keep-alive
//! streams on a follower (forwarded to the leader) that keep a key alive
//! across a leader kill, expiry through the log that every node and a
//! watcher see, revoke, and etcd's answers to bad input. Leases survive a
//! restart of every node.

mod common;

use std::time::{Duration, Instant};

use common::TestCluster;
use etcd_client::{
    Client, EventType, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};

async fn client(cluster: &TestCluster, id: u64) -> Client {
    Client::connect([cluster.endpoint(id)], None).await.unwrap()
}

fn grpc_code(e: &etcd_client::Error) -> Option<tonic::Code> {
    match e {
        etcd_client::Error::GRpcStatus(s) => Some(s.code()),
        _ => None,
    }
}

/// Whether `key` exists, read linearizably through `c`.
async fn exists(c: &mut Client, key: &str) -> bool {
    !c.get(key, None).await.unwrap().kvs().is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_attach_keep_alive_expire_and_revoke() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.others(leader)[0];
    let mut c = client(&cluster, follower).await;

    // A TTL below the minimum (1.5 election timeouts: 2 s here) is raised.
    let granted = c.lease_grant(1, None).await.unwrap();
    let id = granted.id();
    assert!(id > 0, "{granted:?}");
    assert_eq!(granted.ttl(), 2);
    let chosen = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(4242)))
        .await
        .unwrap();
    assert_eq!((chosen.id(), chosen.ttl()), (4242, 30));

    c.put("l/a", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    c.put("l/b", "2", Some(PutOptions::new().with_lease(4242)))
        .await
        .unwrap();
    let mut watcher = client(&cluster, cluster.others(follower)[0]).await;
    let mut events = watcher
        .watch("l/a", Some(WatchOptions::new()))
        .await
        .unwrap();
    assert!(events.message().await.unwrap().unwrap().created());

    // Every node reports the lease and its key.
    for node in cluster.ids() {
        let mut n = client(&cluster, node).await;
        let ttl = n
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!(ttl.granted_ttl(), 2, "node {node}");
        assert!((0..=2).contains(&ttl.ttl()), "node {node}: {ttl:?}");
        let leases: Vec<i64> = n
            .leases()
            .await
            .unwrap()
            .leases()
            .iter()
            .map(|l| l.id())
            .collect();
        if node == follower {
            assert!(leases.contains(&id) && leases.contains(&4242), "{leases:?}");
            assert_eq!(ttl.keys(), [b"l/a".to_vec()]);
        }
    }

    // Kept alive through a follower for three TTLs: the key stays.
    let (mut keeper, mut answers) = c.lease_keep_alive(id).await.unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        keeper.keep_alive().await.unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert_eq!((answer.id(), answer.ttl()), (id, 2));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(exists(&mut c, "l/a").await, "a kept-alive lease expired");
    }
    drop(keeper);
    drop(answers);

    // Left alone it expires within its TTL and an election timeout; the
    // leader revokes it through the log, so the watcher sees the delete.
    let stopped = Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("the expiry within 10 s")
        .unwrap()
        .unwrap();
    let waited = stopped.elapsed();
    assert_eq!(event.events()[0].event_type(), EventType::Delete);
    assert!(
        waited >= Duration::from_millis(1500),
        "expired early: {waited:?}"
    );
    assert!(
        waited <= Duration::from_millis(4500),
        "expired late: {waited:?}"
    );
    for node in cluster.ids() {
        let mut n = client(&cluster, node).await;
        assert!(!exists(&mut n, "l/a").await, "node {node}");
        assert_eq!(n.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    }
    // A keep-alive for a lease that is gone answers TTL 0, which the
    // client reports as "lease not found".
    let gone = c.lease_keep_alive(id).await.map(|_| ()).unwrap_err();
    assert!(gone.to_string().contains("lease not found"), "{gone}");

    // Revoke deletes the lease's keys at once.
    c.lease_revoke(4242).await.unwrap();
    assert!(!exists(&mut c, "l/b").await);
    let gone = c.lease_revoke(4242).await.unwrap_err();
    assert_eq!(grpc_code(&gone), Some(tonic::Code::NotFound), "{gone}");
    assert!(
        gone.to_string().contains("requested lease not found"),
        "{gone}"
    );

    // Bad input: etcd's errors, and the node stays up.
    let missing = c
        .put("l/c", "3", Some(PutOptions::new().with_lease(999)))
        .await
        .unwrap_err();
    assert_eq!(
        grpc_code(&missing),
        Some(tonic::Code::NotFound),
        "{missing}"
    );
    assert!(missing.to_string().contains("requested lease not found"));
    let zero = c.lease_grant(0, None).await.unwrap_err();
    assert_eq!(
        grpc_code(&zero),
        Some(tonic::Code::InvalidArgument),
        "{zero}"
    );
    let huge = c.lease_grant(9_000_000_001, None).await.unwrap_err();
    assert_eq!(grpc_code(&huge), Some(tonic::Code::OutOfRange), "{huge}");
    assert!(huge.to_string().contains("too large lease TTL"), "{huge}");
    let again = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(77)))
        .await
        .unwrap();
    assert_eq!(again.id(), 77);
    let taken = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(77)))
        .await
        .unwrap_err();
    assert_eq!(
        grpc_code(&taken),
        Some(tonic::Code::FailedPrecondition),
        "{taken}"
    );
    assert!(
        taken.to_string().contains("lease already exists"),
        "{taken}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_alive_lease_survives_a_leader_kill_and_leases_survive_restarts() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.others(leader)[0];
    let mut c = client(&cluster, follower).await;
    let id = c.lease_grant(2, None).await.unwrap().id();
    c.put("s/kept", "x", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    let orphan = c.lease_grant(2, None).await.unwrap().id();
    c.put("s/orphan", "y", Some(PutOptions::new().with_lease(orphan)))
        .await
        .unwrap();

    // Keep-alives every half second from the follower, across the kill.
    let (mut keeper, mut answers) = c.lease_keep_alive(id).await.unwrap();
    cluster.kill(leader);
    let until = Instant::now() + Duration::from_secs(8);
    let mut renewed = 0;
    while Instant::now() < until {
        // While there is no leader a keep-alive may fail; the client tries
        // again, as etcd's clients do.
        if keeper.keep_alive().await.is_ok()
            && let Ok(Ok(Some(answer))) =
                tokio::time::timeout(Duration::from_secs(4), answers.message()).await
        {
            assert_eq!(answer.ttl(), 2, "the kept-alive lease was lost");
            renewed += 1;
        } else {
            let (k, a) = c.lease_keep_alive(id).await.unwrap();
            (keeper, answers) = (k, a);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(renewed >= 8, "only {renewed} keep-alives answered");
    let survivors = cluster.others(leader);
    cluster.wait_for_leader(&survivors).await;
    assert!(
        exists(&mut c, "s/kept").await,
        "a kept-alive key was deleted"
    );
    assert!(
        !exists(&mut c, "s/orphan").await,
        "the orphan's lease did not expire"
    );

    // Every node down and up again: the lease and its key are still there.
    drop((keeper, answers));
    let long = c.lease_grant(600, None).await.unwrap().id();
    c.put("s/long", "z", Some(PutOptions::new().with_lease(long)))
        .await
        .unwrap();
    for node in cluster.ids() {
        cluster.kill(node);
    }
    for node in cluster.ids() {
        cluster.spawn(node);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut c = client(&cluster, follower).await;
    let ttl = c
        .lease_time_to_live(long, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 600);
    assert_eq!(ttl.keys(), [b"s/long".to_vec()]);
    assert!(exists(&mut c, "s/long").await);
}
