//! Helpers shared by xtask's integration tests: running the xtask binary,
//! writing cluster files, fake binaries, and child processes that are
//! killed when the test ends, however it ends.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The files every node folder holds, sorted.
pub const NODE_FILES: [&str; 6] = [
    "README.md",
    "bootstrap.sh",
    "konsen-cli",
    "konsen-server",
    "konsen.service",
    "konsen.yml",
];

/// Runs the xtask binary with `args`.
pub fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("running the xtask binary")
}

/// Panics with xtask's output unless it succeeded.
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes a cluster file listing `endpoints` at `dir/cluster.yml`.
pub fn write_cluster_file(dir: &Path, endpoints: &[String]) -> PathBuf {
    let mut text = String::from("# test cluster\nendpoints:\n");
    for e in endpoints {
        text.push_str(&format!("  - {e}\n"));
    }
    text.push_str("tick_ms: 50\n");
    let path = dir.join("cluster.yml");
    fs::write(&path, text).expect("writing the cluster file");
    path
}

/// A folder with stand-in `konsen-server` and `konsen-cli` scripts, for
/// tests of the layout that need no real binaries.
pub fn fake_bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("fake-bin");
    fs::create_dir_all(&bin).unwrap();
    for name in ["konsen-server", "konsen-cli"] {
        let path = bin.join(name);
        fs::write(&path, format!("#!/bin/sh\necho {name} stand-in\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// `n` endpoints on 127.0.0.1 on ports that were free a moment ago.
pub fn free_endpoints(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
