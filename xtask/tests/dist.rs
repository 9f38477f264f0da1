//! `cargo xtask dist` writes the expected node folders, its systemd units
//! pass `systemd-analyze verify`, and bad cluster files are refused with an
//! error naming the file and the problem. These use stand-in binaries
//! (`--bin-dir`), so they build nothing.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::{NODE_FILES, assert_success, fake_bin_dir, write_cluster_file, xtask};

fn endpoints(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("127.0.0.1:{}", 20001 + i)).collect()
}

/// Runs dist for an `n`-node cluster and checks every folder.
/// Runs `xtask dist` with prebuilt (stand-in) binaries.
fn dist(config: &Path, out: &Path, bin: &Path) -> std::process::Output {
    xtask(&[
        "dist",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--bin-dir",
        bin.to_str().unwrap(),
    ])
}

fn dist_makes_one_folder_per_node(n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let endpoints = endpoints(n);
    let config = write_cluster_file(tmp.path(), &endpoints);
    let bin = fake_bin_dir(tmp.path());
    let out = tmp.path().join("output");
    let output = dist(&config, &out, &bin);
    assert_success(&output, "xtask dist");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let cluster_text = fs::read_to_string(&config).unwrap();

    let mut folders: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    folders.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("node_{i}")).collect();
    expected.sort();
    assert_eq!(folders, expected);

    for (i, endpoint) in endpoints.iter().enumerate() {
        let id = i + 1;
        let dir = out.join(format!("node_{i}"));
        assert!(
            stdout.contains(&format!("node {id}/{n} ({endpoint})")),
            "no step line for node {id}:\n{stdout}"
        );
        let mut files: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, NODE_FILES, "files of {}", dir.display());
        for exe in ["konsen-server", "konsen-cli", "bootstrap.sh"] {
            let mode = fs::metadata(dir.join(exe)).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "{exe} of node {id} is not executable");
        }

        let config = fs::read_to_string(dir.join("konsen.yml")).unwrap();
        assert!(
            config.starts_with(&format!("# konsen node {id} of {n} ({endpoint})")),
            "{config}"
        );
        assert!(
            config.ends_with(&cluster_text),
            "konsen.yml must carry the cluster file as written:\n{config}"
        );

        let bootstrap = fs::read_to_string(dir.join("bootstrap.sh")).unwrap();
        let exec =
            format!("exec ./konsen-server --config ./konsen.yml --node-id {id} --data-dir ./data");
        assert!(bootstrap.contains(&exec), "{bootstrap}");

        let unit = fs::read_to_string(dir.join("konsen.service")).unwrap();
        let exec = format!(
            "ExecStart=/opt/konsen/konsen-server --config /opt/konsen/konsen.yml --node-id {id} --data-dir /var/lib/konsen"
        );
        assert!(unit.lines().any(|l| l == exec), "{unit}");
        assert!(!unit.contains("{{"), "unfilled template field:\n{unit}");
        verify_unit(&dir, &unit);
    }
}

/// `systemd-analyze verify` on `unit` with its /opt/konsen paths pointed at
/// `dir`, where the binaries are (verify checks that ExecStart exists).
/// Skipped, saying so, where systemd is not installed.
fn verify_unit(dir: &Path, unit: &str) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: systemd-analyze verify of {}: systemd-analyze is not installed (apt-get install systemd)",
            dir.display()
        );
        return;
    }
    let check_dir = tempfile::tempdir().unwrap();
    let path = check_dir.path().join("konsen.service");
    fs::write(&path, unit.replace("/opt/konsen", dir.to_str().unwrap())).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // verify exits 0 on directives it ignores, so its complaints about our
    // unit count as failures too.
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("konsen.service"))
        .collect();
    assert!(
        output.status.success() && complaints.is_empty(),
        "systemd-analyze verify {}: {}\n{text}",
        dir.join("konsen.service").display(),
        output.status
    );
}

#[test]
fn dist_three_nodes() {
    dist_makes_one_folder_per_node(3);
}

#[test]
fn dist_five_nodes() {
    dist_makes_one_folder_per_node(5);
}

/// dist with `text` as the cluster file fails, naming the file and `problem`,
/// and writes nothing.
fn refused(text: &str, problem: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("cluster.yml");
    fs::write(&config, text).unwrap();
    let bin = fake_bin_dir(tmp.path());
    let out = tmp.path().join("output");
    let output = dist(&config, &out, &bin);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "dist accepted {text:?}");
    assert!(
        stderr.contains(config.to_str().unwrap()),
        "error does not name the file: {stderr}"
    );
    assert!(
        stderr.contains(problem),
        "error does not say {problem:?}: {stderr}"
    );
    assert!(!out.exists(), "dist wrote output for a bad cluster file");
}

#[test]
fn no_endpoints_is_refused() {
    refused("tick_ms: 100\n", "no endpoints");
    refused("endpoints: []\n", "no endpoints");
}

#[test]
fn duplicate_endpoints_are_refused() {
    refused(
        "endpoints:\n  - 127.0.0.1:20001\n  - 127.0.0.1:20002\n  - 127.0.0.1:20001\n",
        "duplicate endpoint 127.0.0.1:20001: listed for node 1 and node 3",
    );
}

#[test]
fn unparsable_addresses_are_refused() {
    refused(
        "endpoints:\n  - 127.0.0.1:20001\n  - 127.0.0.1\n",
        "node 2 (\"127.0.0.1\") is not a valid host:port",
    );
    refused("endpoints:\n  - 127.0.0.1:port\n", "bad port");
    refused(
        "endpoints:\n  - \"::1:20001\"\n",
        "IPv6 addresses are written in brackets",
    );
}

#[test]
fn a_missing_cluster_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("nope.yml");
    let output = xtask(&[
        "dist",
        "--config",
        config.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("nope.yml"), "{stderr}");
}
