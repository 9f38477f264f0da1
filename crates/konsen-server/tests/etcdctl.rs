//! etcdctl (the etcd project's own client) against a konsen cluster.
//! Skipped, with a notice, when `etcdctl` is not installed
//! (`apt-get install etcd-client`).

mod common;

use std::process::Command;

use common::TestCluster;

fn etcdctl(endpoints: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("run etcdctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_put_get_del_member_list_endpoint_status_hashkv() {
    if Command::new("etcdctl").arg("version").output().is_err() {
        assert!(
            !common::required_in_ci(),
            "etcdctl is missing: .ci/run installs it (etcd-client)"
        );
        eprintln!("NOTICE: etcdctl not found; skipping the etcdctl compatibility test");
        return;
    }
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let all = cluster.endpoints.join(",");
    let one = |id: u64| cluster.endpoint(id).to_string();

    let (ok, out) = etcdctl(&one(1), &["put", "name", "Lizhao Liu"]);
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = etcdctl(&one(2), &["put", "nick", "lz"]);
    assert!(ok, "{out}");
    let (ok, out) = etcdctl(&one(3), &["get", "name"]);
    assert!(ok && out == "name\nLizhao Liu\n", "{out}");
    let (ok, out) = etcdctl(&all, &["get", "--prefix", "n"]);
    assert!(ok && out == "name\nLizhao Liu\nnick\nlz\n", "{out}");
    let (ok, out) = etcdctl(&one(2), &["get", "name", "--consistency=s"]);
    assert!(ok && out.contains("Lizhao Liu"), "{out}");
    // A serializable range (served off the runtime's thread) on a node
    // that may still be applying "nick": it shows both keys soon.
    let mut out = String::new();
    for _ in 0..50 {
        let (ok, o) = etcdctl(&one(2), &["get", "--prefix", "n", "--consistency=s"]);
        assert!(ok, "{o}");
        out = o;
        if out == "name\nLizhao Liu\nnick\nlz\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(out, "name\nLizhao Liu\nnick\nlz\n");
    let (ok, out) = etcdctl(&one(1), &["del", "--prefix", "n"]);
    assert!(ok && out.trim() == "2", "{out}");
    let (ok, out) = etcdctl(&all, &["get", "--prefix", "n"]);
    assert!(ok && out.is_empty(), "{out}");

    let (ok, out) = etcdctl(&all, &["member", "list"]);
    assert!(ok, "{out}");
    for id in 1..=3 {
        assert!(
            out.contains(&format!("node-{id}")) && out.contains(&format!("http://{}", one(id))),
            "{out}"
        );
    }
    let (ok, out) = etcdctl(&all, &["endpoint", "status"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.contains("3.5.0-konsen") && out.contains("true"),
        "{out}"
    );
    let (ok, out) = etcdctl(&all, &["endpoint", "health"]);
    assert!(ok && out.matches("is healthy").count() == 3, "{out}");

    // Every node holds the same state: the same hash, three times.
    let (ok, _) = etcdctl(&one(1), &["put", "hashed", "1"]);
    assert!(ok);
    cluster.wait_for_same_state(&[1, 2, 3]).await;
    let (ok, out) = etcdctl(&all, &["endpoint", "hashkv", "-w", "json"]);
    assert!(ok, "{out}");
    let hashes: Vec<&str> = out
        .split("\"hash\":")
        .skip(1)
        .map(|rest| rest.split([',', '}']).next().unwrap_or(""))
        .collect();
    assert!(
        hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0] && *h != "0"),
        "{out}"
    );

    let (ok, out) = etcdctl(&one(1), &["put", "", "x"]);
    assert!(!ok && out.contains("key is not provided"), "{out}");
}
