//! `konsen-cli` against a real cluster: commands, output formats, the
//! interactive prompt, and its exit codes. Skipped, with a notice, when the
//! CLI binary has not been built next to the server
//! (`cargo build --release -p konsen-cli`).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::TestCluster;

fn cli_path() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_konsen-server")).with_file_name("konsen-cli");
    if !path.exists() && common::required_in_ci() {
        panic!(
            "{} is missing: .ci/run builds every target first",
            path.display()
        );
    }
    path.exists().then_some(path)
}

fn cli(endpoints: &str, args: &[&str]) -> Output {
    Command::new(cli_path().unwrap())
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .expect("run konsen-cli")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_finds_the_leader_and_reads_back_writes() {
    if cli_path().is_none() {
        eprintln!("NOTICE: konsen-cli is not built next to konsen-server; skipping the CLI test");
        return;
    }
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let all = cluster.endpoints.join(",");
    // Only a follower given: the CLI finds the leader through it.
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    let one = cluster.endpoint(follower).to_string();

    let o = cli(&one, &["set", "name", "Lizhao Liu"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).trim(), "OK");
    let o = cli(&all, &["get", "name"]);
    assert_eq!(stdout(&o).trim(), "Lizhao Liu", "{o:?}");
    // A serializable read may hit a node that has not applied it yet.
    let mut o = cli(&all, &["get", "name", "--serializable"]);
    for _ in 0..50 {
        if stdout(&o).trim() == "Lizhao Liu" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        o = cli(&all, &["get", "name", "--serializable"]);
    }
    assert_eq!(stdout(&o).trim(), "Lizhao Liu", "{o:?}");
    let o = cli(&all, &["-w", "json", "get", "na", "--prefix"]);
    assert!(stdout(&o).contains(r#""value":"Lizhao Liu""#), "{o:?}");

    let o = cli(&one, &["leader"]);
    assert_eq!(stdout(&o).trim(), cluster.endpoint(leader), "{o:?}");
    let o = cli(&all, &["status"]);
    let text = stdout(&o);
    assert!(o.status.success() && text.lines().count() == 4, "{text}");
    assert_eq!(text.matches(" leader ").count(), 1, "{text}");
    assert_eq!(text.matches(" follower ").count(), 2, "{text}");

    let mut prompt = Command::new(cli_path().unwrap())
        .arg("--endpoints")
        .arg(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    prompt
        .stdin
        .take()
        .unwrap()
        .write_all(b"set greeting=hello world\nget greeting\ndel greeting\nget greeting\nexit\n")
        .unwrap();
    let o = prompt.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    // Read once before the delete, not after it.
    assert_eq!(stdout(&o).matches("hello world").count(), 1, "{o:?}");

    let o = cli(&all, &["del", "name"]);
    assert_eq!(stdout(&o).trim(), "1", "{o:?}");
    let o = cli(&all, &["set", "", "x"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("key is not provided"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_exit_codes_tell_no_leader_from_unreachable() {
    if cli_path().is_none() {
        eprintln!("NOTICE: konsen-cli is not built next to konsen-server; skipping the CLI test");
        return;
    }
    let mut cluster = TestCluster::configure(3);
    cluster.spawn(1);
    // One node of three: it answers, but can never know a leader.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let o = cli(cluster.endpoint(1), &["--deadline", "2s", "get", "k"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no leader"),
        "{o:?}"
    );

    let o = cli(
        &cluster.endpoints[1..].join(","),
        &["--deadline", "1s", "get", "k"],
    );
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no endpoint reachable"),
        "{o:?}"
    );
    cluster.kill(1);
}

fn cli_stdin(endpoints: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(cli_path().unwrap())
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run konsen-cli");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_swaps_and_runs_txns_and_exits_6_on_a_failed_compare() {
    if cli_path().is_none() {
        eprintln!("NOTICE: konsen-cli is not built next to konsen-server; skipping the CLI test");
        return;
    }
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let all = cluster.endpoints.join(",");

    // --create: only while the key does not exist.
    let o = cli(&all, &["cas", "--create", "lock", "me"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).trim(), "OK");
    let o = cli(&all, &["cas", "--create", "lock", "you"]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert_eq!(stdout(&o).trim(), "me", "the current value: {o:?}");

    let o = cli(&all, &["cas", "lock", "me", "you"]);
    assert!(o.status.success(), "{o:?}");
    let o = cli(&all, &["cas", "lock", "me", "them"]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert_eq!(stdout(&o).trim(), "you", "{o:?}");
    let o = cli(&all, &["get", "lock"]);
    assert_eq!(
        stdout(&o).trim(),
        "you",
        "the failed swap wrote nothing: {o:?}"
    );
    // A missing key holds no value, not even "".
    let o = cli(&all, &["-w", "json", "cas", "nothing", "", "x"]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(stdout(&o).contains(r#""kv":null"#), "{o:?}");

    // etcdctl's txn syntax: compares, success requests, failure requests.
    let input = "value(\"lock\") = \"you\"\nmod(\"lock\") > \"0\"\n\nput lock \"them, now\"\nget lock\n\nget other\n";
    let o = cli_stdin(&all, &["txn"], input);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(out.starts_with("SUCCESS\n"), "{out}");
    assert!(
        out.contains("OK\n") && out.contains("lock\nthem, now"),
        "{out}"
    );
    // The same txn again: its compare now fails, the failure branch runs.
    let o = cli_stdin(&all, &["txn"], input);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(stdout(&o).starts_with("FAILURE"), "{o:?}");
    let o = cli(&all, &["get", "lock"]);
    assert_eq!(stdout(&o).trim(), "them, now", "{o:?}");
    // A line that does not parse is a usage error naming it.
    let o = cli_stdin(&all, &["txn"], "value(\"lock\") ~ \"x\"\n\n\n");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(!String::from_utf8_lossy(&o.stderr).is_empty(), "{o:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_watch_replays_from_a_revision_and_resumes_on_another_node() {
    if cli_path().is_none() {
        eprintln!("NOTICE: konsen-cli is not built next to konsen-server; skipping the CLI test");
        return;
    }
    use std::io::BufRead;
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let first = cluster.put_retrying(2, "w/a", "1").await;
    let from = first.header.unwrap().revision;
    // Node 1 first: the watch starts there, and moves on when it dies.
    let endpoints = format!("{},{}", cluster.endpoint(1), cluster.endpoint(2));
    let mut watch = Command::new(cli_path().unwrap())
        .arg("--endpoints")
        .arg(&endpoints)
        .args(["watch", "w/", "--prefix", "--rev", &from.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run konsen-cli watch");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&lines);
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let wait_for = |n: usize| {
        let lines = std::sync::Arc::clone(&lines);
        async move {
            let started = std::time::Instant::now();
            while lines.lock().unwrap().len() < n && started.elapsed() < common::WAIT_MAX {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            lines.lock().unwrap().clone()
        }
    };
    cluster.put_retrying(2, "w/b", "2").await;
    cluster.put_retrying(2, "other", "x").await;
    assert_eq!(wait_for(6).await, ["PUT", "w/a", "1", "PUT", "w/b", "2"]);
    cluster.kill(1);
    cluster.put_retrying(2, "w/c", "3").await;
    let seen = wait_for(9).await;
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        seen,
        ["PUT", "w/a", "1", "PUT", "w/b", "2", "PUT", "w/c", "3"],
        "every event once, across the node's death"
    );

    // From a compacted revision: etcd's error, exit code 1.
    let mut kv = cluster.kv(2);
    let last = cluster
        .put_retrying(2, "w/d", "4")
        .await
        .header
        .unwrap()
        .revision;
    kv.compact(konsen_rpc::etcd::etcdserverpb::CompactionRequest {
        revision: last,
        physical: true,
    })
    .await
    .unwrap();
    let o = cli(
        cluster.endpoint(2),
        &["watch", "w/", "--prefix", "--rev", &from.to_string()],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("required revision has been compacted"),
        "{o:?}"
    );
}
