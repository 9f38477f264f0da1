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

/// Runs `etcdctl txn -i` with `script` on its standard input.
fn etcdctl_txn(endpoints: &str, script: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=5s")
        .args(["txn", "-i"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run etcdctl txn");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .expect("write the txn");
    let output = child.wait_with_output().expect("etcdctl txn finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The lines of `etcdctl txn -i`'s answer after its three prompts.
fn txn_answer(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| !l.ends_with(':') && !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_txn_put_prev_kv_get_rev_and_compaction() {
    if Command::new("etcdctl").arg("version").output().is_err() {
        assert!(
            !common::required_in_ci(),
            "etcdctl is missing: .ci/run installs it (etcd-client)"
        );
        eprintln!("NOTICE: etcdctl not found; skipping the etcdctl txn test");
        return;
    }
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let all = cluster.endpoints.join(",");
    let one = |id: u64| cluster.endpoint(id).to_string();

    // Revisions 2, 3, 4: three versions of one key.
    for v in ["v1", "v2"] {
        let (ok, out) = etcdctl(&all, &["put", "k", v]);
        assert!(ok, "{out}");
    }
    let (ok, out) = etcdctl(&all, &["put", "--prev-kv", "k", "v3"]);
    assert!(ok && out == "OK\nk\nv2\n", "{out}");
    // Every node answers at every revision, followers included.
    for id in 1..=3 {
        for (rev, want) in [("2", "v1"), ("3", "v2"), ("4", "v3")] {
            let (ok, out) = etcdctl(&one(id), &["get", "k", &format!("--rev={rev}")]);
            assert!(
                ok && out == format!("k\n{want}\n"),
                "node {id} rev {rev}: {out}"
            );
        }
    }
    let (ok, out) = etcdctl(&all, &["get", "k", "--rev=9"]);
    assert!(
        !ok && out.contains("etcdserver: mvcc: required revision is a future revision"),
        "{out}"
    );

    // Compares on value, version, create and mod; both branches.
    let (ok, out) = etcdctl_txn(
        &all,
        "value(\"k\") = \"v3\"\nversion(\"k\") = \"3\"\ncreate(\"k\") = \"2\"\nmod(\"k\") = \"4\"\n\nput k v4\nget k\n\nput other x\n\n",
    );
    assert!(ok, "{out}");
    assert_eq!(txn_answer(&out), ["SUCCESS", "OK", "k", "v4"], "{out}");
    let (ok, out) = etcdctl_txn(
        &all,
        "mod(\"k\") < \"4\"\n\nput k never\n\nget k\nput other y\n\n",
    );
    assert!(ok, "{out}");
    assert_eq!(txn_answer(&out), ["FAILURE", "k", "v4", "OK"], "{out}");
    // The txn's writes share one revision: 6 after the failed branch's put.
    let (ok, out) = etcdctl(&all, &["get", "other", "-w", "json"]);
    assert!(ok && out.contains("\"mod_revision\":6"), "{out}");
    // A read-only txn (no log entry: the revision stays).
    let (ok, out) = etcdctl_txn(&all, "version(\"k\") > \"0\"\n\nget k\n\n\n");
    assert!(ok, "{out}");
    assert_eq!(txn_answer(&out), ["SUCCESS", "k", "v4"], "{out}");
    let (ok, out) = etcdctl(&all, &["get", "other", "-w", "json"]);
    assert!(ok && out.contains("\"revision\":6"), "{out}");
    // etcd's refusal of the same key put twice.
    let (ok, out) = etcdctl_txn(&all, "\nput d 1\nput d 2\n\n\n");
    assert!(
        !ok && out.contains("etcdserver: duplicate key given in txn request"),
        "{out}"
    );

    let (ok, out) = etcdctl(&all, &["compaction", "4"]);
    assert!(ok && out.contains("compacted revision 4"), "{out}");
    for id in 1..=3 {
        let (ok, out) = etcdctl(&one(id), &["get", "k", "--rev=3"]);
        assert!(
            !ok && out.contains("etcdserver: mvcc: required revision has been compacted"),
            "node {id}: {out}"
        );
        let (ok, out) = etcdctl(&one(id), &["get", "k", "--rev=4"]);
        assert!(ok && out == "k\nv3\n", "node {id}: {out}");
    }
    let (ok, out) = etcdctl(&all, &["compaction", "3"]);
    assert!(
        !ok && out.contains("required revision has been compacted"),
        "{out}"
    );
}

/// A running `etcdctl watch`, its output lines gathered as they come.
struct EtcdctlWatch {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl EtcdctlWatch {
    fn start(endpoints: &str, args: &[&str]) -> EtcdctlWatch {
        EtcdctlWatch::spawn(endpoints, &[&["watch"], args].concat())
    }

    /// Any long-running etcdctl command (watch, lock, elect, keep-alive).
    fn spawn(endpoints: &str, args: &[&str]) -> EtcdctlWatch {
        use std::io::BufRead;
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run etcdctl watch");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        // Ends when etcdctl exits (the test kills it).
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        EtcdctlWatch { child, lines }
    }

    /// The lines printed so far.
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until at least `n` lines were printed, or `max` passed.
    async fn wait_lines(&self, n: usize, max: std::time::Duration) -> Vec<String> {
        let started = std::time::Instant::now();
        while self.lines().len() < n && started.elapsed() < max {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.lines()
    }

    /// Ends etcdctl as Ctrl-C would, so it releases its lease first.
    fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Waits until `events` put events (three lines each) were printed;
    /// returns them as (type, key, value).
    async fn events(&self, events: usize) -> Vec<(String, String, String)> {
        let started = std::time::Instant::now();
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if lines.len() >= 3 * events || started.elapsed() > common::WAIT_MAX {
                return lines
                    .chunks(3)
                    .map(|c| {
                        (
                            c[0].clone(),
                            c[1].clone(),
                            c.get(2).cloned().unwrap_or_default(),
                        )
                    })
                    .collect();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdctlWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_watch_across_a_leader_kill_sees_every_put_once() {
    if Command::new("etcdctl").arg("version").output().is_err() {
        assert!(
            !common::required_in_ci(),
            "etcdctl is missing: .ci/run installs it (etcd-client)"
        );
        eprintln!("NOTICE: etcdctl not found; skipping the etcdctl watch test");
        return;
    }
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let others = cluster.others(leader);
    let (follower, survivor) = (others[0], others[1]);
    let start = cluster.put_retrying(follower, "setup", "x").await;
    let from = start.header.unwrap().revision + 1;
    let rev = format!("--rev={from}");
    // One watch on a follower; one that starts on the leader (whose
    // stream breaks with it) and resumes elsewhere, as etcd's client does.
    let on_follower = EtcdctlWatch::start(cluster.endpoint(follower), &["--prefix", "w/", &rev]);
    let via_leader = EtcdctlWatch::start(
        &format!(
            "{},{}",
            cluster.endpoint(leader),
            cluster.endpoint(survivor)
        ),
        &["--prefix", "w/", &rev],
    );
    for i in 0..30 {
        cluster
            .put_retrying(follower, &format!("w/{i:03}"), &format!("v{i}"))
            .await;
    }
    cluster.kill(leader);
    let mut last = 0;
    for i in 30..60 {
        let put = cluster
            .put_retrying(follower, &format!("w/{i:03}"), &format!("v{i}"))
            .await;
        last = put.header.unwrap().revision;
    }
    // Every revision from `from` to `last` is one put under w/ (a retried
    // put may have applied twice: then its key shows twice, everywhere).
    let count = (last - from + 1) as usize;
    let replay = EtcdctlWatch::start(cluster.endpoint(survivor), &["--prefix", "w/", &rev]);
    let replayed = replay.events(count).await;
    assert_eq!(replayed.len(), count, "the replay from {rev}");
    for i in 0..60 {
        assert!(
            replayed.iter().any(|e| e.1 == format!("w/{i:03}")),
            "w/{i:03} missing: {replayed:?}"
        );
    }
    assert!(replayed.iter().all(|e| e.0 == "PUT"));
    assert_eq!(
        on_follower.events(count).await,
        replayed,
        "the follower's watch"
    );
    assert_eq!(
        via_leader.events(count).await,
        replayed,
        "the watch that started on the leader"
    );
}

fn etcdctl_missing(what: &str) -> bool {
    if Command::new("etcdctl").arg("version").output().is_ok() {
        return false;
    }
    assert!(
        !common::required_in_ci(),
        "etcdctl is missing: .ci/run installs it (etcd-client)"
    );
    eprintln!("NOTICE: etcdctl not found; skipping the etcdctl {what} test");
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_lease_grant_put_keep_alive_timetolive_and_expiry() {
    if etcdctl_missing("lease") {
        return;
    }
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.others(leader)[0];
    let all = cluster
        .ids()
        .iter()
        .map(|&id| cluster.endpoint(id).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (ok, out) = etcdctl(&all, &["lease", "grant", "3"]);
    assert!(ok, "{out}");
    // "lease 0001a2537b635604 granted with TTL(3s)"
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    assert!(out.contains("granted with TTL(3s)"), "{out}");
    let (ok, out) = etcdctl(&all, &["put", &format!("--lease={id}"), "lk", "v"]);
    assert!(ok, "{out}");
    let (ok, out) = etcdctl(&all, &["lease", "timetolive", "--keys", &id]);
    assert!(ok && out.contains("attached keys([lk])"), "{out}");
    let (ok, out) = etcdctl(&all, &["lease", "list"]);
    assert!(ok && out.contains(&id), "{out}");

    // Kept alive through a follower for longer than its TTL: the key stays.
    let keep = EtcdctlWatch::spawn(cluster.endpoint(follower), &["lease", "keep-alive", &id]);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let (ok, out) = etcdctl(&all, &["get", "lk"]);
    assert!(ok && out.contains("lk"), "kept alive, yet: {out}");
    let renewed = keep.lines();
    assert!(
        renewed.len() >= 2 && renewed.iter().all(|l| l.contains("keepalived with TTL(3)")),
        "{renewed:?}"
    );
    drop(keep);

    // Orphaned: gone within TTL + election time (and the expiry check).
    let started = std::time::Instant::now();
    loop {
        let (ok, out) = etcdctl(&all, &["get", "lk"]);
        assert!(ok, "{out}");
        if !out.contains("lk") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3 + 1 + 3),
            "lk outlived its lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, out) = etcdctl(&all, &["lease", "timetolive", &id]);
    assert!(out.contains("already expired"), "{out}");
    let (ok, out) = etcdctl(&all, &["lease", "revoke", &id]);
    assert!(!ok && out.contains("requested lease not found"), "{out}");
    let (ok, out) = etcdctl(&all, &["lease", "grant", "0"]);
    assert!(!ok && out.contains("lease TTL must be positive"), "{out}");
    let (ok, out) = etcdctl(&all, &["put", "--lease=123", "x", "y"]);
    assert!(!ok && out.contains("requested lease not found"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_lock_is_held_by_one_process_at_a_time_across_nodes() {
    if etcdctl_missing("lock") {
        return;
    }
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let quiet = std::time::Duration::from_secs(2);
    let mut first = EtcdctlWatch::spawn(cluster.endpoint(1), &["lock", "L"]);
    let held = first.wait_lines(1, common::WAIT_MAX).await;
    assert!(held[0].starts_with("L/"), "{held:?}");
    let mut second = EtcdctlWatch::spawn(cluster.endpoint(2), &["lock", "--ttl=3", "L"]);
    let waiting = second.wait_lines(1, quiet).await;
    assert!(waiting.is_empty(), "both hold L: {waiting:?}");
    // The first exits cleanly: the second gets the lock.
    first.interrupt();
    let got = second.wait_lines(1, common::WAIT_MAX).await;
    assert!(!got.is_empty() && got[0].starts_with("L/"), "{got:?}");
    assert_ne!(got[0], held[0]);

    // The second dies without releasing: the third waits for its lease
    // (TTL 3 s) to expire, and no longer than that plus election time.
    let third = EtcdctlWatch::spawn(cluster.endpoint(3), &["lock", "L"]);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _ = second.child.kill();
    let _ = second.child.wait();
    let killed = std::time::Instant::now();
    let early = third.wait_lines(1, std::time::Duration::from_secs(1)).await;
    assert!(
        early.is_empty(),
        "L taken while its holder's lease lived: {early:?}"
    );
    let late = third
        .wait_lines(1, std::time::Duration::from_secs(10))
        .await;
    assert!(!late.is_empty() && late[0].starts_with("L/"), "{late:?}");
    assert!(
        killed.elapsed() < std::time::Duration::from_secs(3 + 1 + 3),
        "took {:?}",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_elect_has_one_leader_and_a_new_one_when_it_exits() {
    if etcdctl_missing("elect") {
        return;
    }
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let others = cluster.others(leader);
    let observer = EtcdctlWatch::spawn(cluster.endpoint(others[1]), &["elect", "-l", "E"]);
    let mut p1 = EtcdctlWatch::spawn(cluster.endpoint(others[0]), &["elect", "E", "p1"]);
    let won = p1.wait_lines(2, common::WAIT_MAX).await;
    assert_eq!(won.get(1).map(String::as_str), Some("p1"), "{won:?}");
    let p2 = EtcdctlWatch::spawn(cluster.endpoint(others[1]), &["elect", "E", "p2"]);
    // A Raft leader change does not end p1's term. (Its session TTL is
    // etcdctl's 60 s, so this does not time the lease extension:
    // tests/lease.rs does.)
    cluster.kill(leader);
    let waiting = p2.wait_lines(1, std::time::Duration::from_secs(4)).await;
    assert!(waiting.is_empty(), "two leaders: {waiting:?}");
    p1.interrupt();
    let won = p2.wait_lines(2, common::WAIT_MAX).await;
    assert_eq!(won.get(1).map(String::as_str), Some("p2"), "{won:?}");
    let seen = observer.wait_lines(4, common::WAIT_MAX).await;
    let proposals: Vec<&str> = seen.iter().skip(1).step_by(2).map(String::as_str).collect();
    assert_eq!(proposals, ["p1", "p2"], "{seen:?}");
}
